"""`registry-auth logins check NAME [SCOPE ...]`: a login tried through the configured backends
as the server would try it, showing which backend said what, the account and groups it gives,
and what the scopes would be granted (ACL, then the authorization webhook). For "why can't
this user push?": no token is issued and nothing is counted by the brute-force protection.

Exit status: 0 accepted, 1 refused, 3 a backend (or the webhook) unavailable.
"""

from __future__ import annotations

import argparse
import asyncio

from pydantic import SecretStr

from app.assembly import authz_webhook_from_settings, policy_authorizer
from app.authn.base import AuthResult, Credentials, Outcome
from app.authn.build import Authentication, build_authentication
from app.authn.chain import ask_link
from app.authz.base import Authorizer, Requester
from app.authz.default import DefaultAuthorizer
from app.cli_common import check_service_option, ip_option, read_password
from app.errors import BackendUnavailableError, RegistryAuthError
from app.protocol.scopes import Scope, parse_scopes
from app.settings import Settings

UNAVAILABLE = 3


def run(settings: Settings, args: argparse.Namespace) -> int:
    service = args.service or settings.service
    check_service_option(settings, service)
    ip = ip_option(args.ip) if args.ip is not None else None
    scopes = parse_scopes(args.scopes)
    password = read_password(args.password_stdin, confirm=False)
    if not password:
        raise RegistryAuthError("empty password")
    credentials = Credentials(args.account, SecretStr(password), service, str(ip) if ip else None)
    return asyncio.run(_check(settings, credentials, Requester(None, service, ip=ip), scopes))


async def _check(
    settings: Settings, credentials: Credentials, where: Requester, scopes: list[Scope]
) -> int:
    authentication = build_authentication(settings)
    hook = authz_webhook_from_settings(settings)
    try:
        result = await _login(authentication, credentials)
        if result is None:
            return UNAVAILABLE
        if not result.accepted:
            print(f"refused: {credentials.account!r} would get 401")
            return 1
        groups = ", ".join(sorted(result.groups)) or "none"
        print(f"accepted as {result.account!r}; groups: {groups}")
        if not scopes:
            return 0
        requester = where._replace(account=result.account, groups=result.groups)
        granted = _authorizer(settings).authorize(requester, scopes)
        if hook is not None:
            try:
                granted = await hook.restrict(requester, granted)
            except BackendUnavailableError as exc:
                print(f"authz_webhook {exc.backend!r}: unavailable ({exc.cause})")
                return UNAVAILABLE
        for scope in granted:
            print(f"  {scope.resource_type}:{scope.name}: {', '.join(scope.actions) or 'nothing'}")
        return 0
    finally:
        for close in authentication.closers:
            await close()
        if hook is not None:
            await hook.aclose()


async def _login(authentication: Authentication, credentials: Credentials) -> AuthResult | None:
    """Each backend's answer, printed, until one decides; None when one is unavailable."""
    chain = authentication.authenticator
    for index, link in enumerate(chain.links if chain is not None else ()):
        if not link.answers_for(credentials.account):
            print(f"{link.name}: does not answer for this name (its `accounts`, or robot names)")
            continue
        try:
            result = await ask_link(link, credentials)  # a backend's bug is an outage here too
        except BackendUnavailableError as exc:
            print(f"{link.name}: unavailable ({exc.cause}): the server would answer 503")
            return None
        typed = credentials.account
        if chain is not None and result.accepted and result.account not in (None, typed):
            owner = await chain.earlier_owner(index, result.account)
            if owner is not None:  # as the server's chain refuses it (BackendChain)
                print(
                    f"{link.name}: accepted as {result.account!r}, an account backend {owner} "
                    "holds: refused (a name one backend holds is not reached through another "
                    "by spelling it differently)"
                )
                return AuthResult(Outcome.SHADOWED)
        print(f"{link.name}: {_said(result.outcome)}")
        if result.outcome is not Outcome.NOT_MINE:
            return result
    if chain is None:
        print("no authentication backend is configured: only anonymous requests are served")
    return AuthResult(Outcome.REJECTED)


def _said(outcome: Outcome) -> str:
    return {
        Outcome.ACCEPTED: "accepted",
        Outcome.REJECTED: "refused (it knows the name; the password is wrong)",
        Outcome.EXPIRED: "refused (the password is right, but the account, or the token given as "
        "its password, has expired)",
        Outcome.NOT_MINE: "not mine (it does not know the name)",
        Outcome.SHADOWED: "refused (it takes the name as another spelling of an account a "
        "backend before it holds)",
        Outcome.UNNAMED: "refused (the password is right, but the entry lacks the attribute "
        "that names the account: see account_attribute, and the warning above)",
    }[outcome]


def _authorizer(settings: Settings) -> Authorizer:
    return policy_authorizer(settings, []) or DefaultAuthorizer()
