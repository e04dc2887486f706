"""Issuing a token: authenticate -> authorize -> claims -> sign. Knows no HTTP."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from app.authn.base import Authenticator, AuthResult, Credentials, Outcome
from app.authn.build import build_authentication
from app.authz.base import Authorizer, Requester
from app.authz.default import DefaultAuthorizer
from app.authz.engine import PolicyAuthorizer
from app.authz.files import load_policy
from app.errors import AuthenticationError, SigningUnavailableError, UnknownServiceError
from app.keys.expiry import CertificateStatus, ExpiryState, certificate_status
from app.keys.model import KeyRing
from app.keys.signing import sign_token
from app.keys.store import RING_FILE, load_keyring
from app.protocol.scopes import Scope
from app.protocol.tokens import TokenRequest, build_claims
from app.reload import Reloadable
from app.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], float]
IdSource = Callable[[], str]
IPAddress = IPv4Address | IPv6Address


def new_jti() -> str:
    """A unique token id from the OS CSPRNG (128 bits)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    issued_at: int
    expires_in: int
    account: str | None
    granted: list[Scope]
    kid: str
    jti: str


def _policy_authorizer(settings: Settings, reloadables: list[Reloadable[Any]]) -> Authorizer | None:
    """The ACL file as a hot-reloaded authorizer; None (the built-in default) without `acl`."""
    if settings.acl is None:
        return None
    path = settings.acl
    policy = Reloadable(f"ACL {path}", lambda: load_policy(path), lambda: [path])
    reloadables.append(policy)
    return PolicyAuthorizer(policy.get)


class TokenService:
    """Everything needed to answer a token request, built once at start."""

    def __init__(
        self,
        settings: Settings,
        keyring: Callable[[], KeyRing],
        *,
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        clock: Clock = time.time,
        id_source: IdSource = new_jti,
        reloadables: Sequence[Reloadable[Any]] = (),
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.settings = settings
        self._keyring = keyring
        self.authenticator = authenticator
        self.authorizer = authorizer or DefaultAuthorizer()
        self._clock = clock
        self._id_source = id_source
        self.reloadables = tuple(reloadables)
        self._last_expiry: tuple[str, ExpiryState] | None = None
        self.certificate_status()
        self._closers = tuple(closers)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = time.time) -> TokenService:
        """Load keys and users; KeyStoreError/UserStoreError say what is wrong."""
        keys_dir = settings.keys_dir
        keyring = Reloadable(
            "key ring", lambda: load_keyring(keys_dir), lambda: [keys_dir / RING_FILE]
        )
        reloadables: list[Reloadable[Any]] = [keyring]
        authentication = build_authentication(settings)
        reloadables += authentication.reloadables
        authorizer = _policy_authorizer(settings, reloadables)
        return cls(
            settings,
            keyring.get,
            authenticator=authentication.authenticator,
            authorizer=authorizer,
            reloadables=reloadables,
            closers=authentication.closers,
            clock=clock,
        )

    async def aclose(self) -> None:
        """Close the backends' connections (LDAP pool, webhook client)."""
        for close in self._closers:
            await close()

    @property
    def keyring(self) -> KeyRing:
        return self._keyring()

    @property
    def keyring_source(self) -> Callable[[], KeyRing]:
        return self._keyring

    async def issue(
        self,
        request: TokenRequest,
        credentials: Credentials | None,
        client_ip: IPAddress | None = None,
    ) -> IssuedToken:
        """Raise UnknownServiceError (400) or AuthenticationError (401); otherwise a token.

        A scope that is not allowed is not an error: its entry carries no actions.
        """
        service = self._check_service(request.service)
        account: str | None = None
        groups: frozenset[str] = frozenset()
        if credentials is not None:
            where = str(client_ip) if client_ip is not None else None
            result = await self._authenticate(
                replace(credentials, service=service, client_ip=where)
            )
            account, groups = result.account, result.groups
        requester = Requester(account, service, groups, client_ip)
        granted = self.authorizer.authorize(requester, request.scopes)
        return self._sign(requester, granted)

    def _check_service(self, service: str | None) -> str:
        expected = self.settings.service
        if service is not None and service != expected:
            raise UnknownServiceError(service, expected)
        return expected

    async def _authenticate(self, credentials: Credentials) -> AuthResult:
        if self.authenticator is None:
            result = AuthResult(Outcome.NOT_MINE)
        else:
            result = await self.authenticator.authenticate(credentials)
        if not result.accepted:
            log.info("authentication failed for account %r", credentials.account)
            raise AuthenticationError(self.settings.realm)
        return result

    def certificate_status(self) -> CertificateStatus:
        """Expiry of the active certificate; logged once whenever it changes (kid or state)."""
        key = self.keyring.active
        window = timedelta(days=self.settings.certificate_warning_days)
        now = datetime.fromtimestamp(self._clock(), UTC)
        status = certificate_status(key.kid, key.not_after, now, window)
        if (status.kid, status.state) != self._last_expiry:
            self._last_expiry = (status.kid, status.state)
            level = logging.INFO if status.state is ExpiryState.OK else logging.WARNING
            log.log(level, "%s", status.message)
        return status

    def can_sign(self) -> bool:
        """False when every token would carry an expired certificate in `x5c`."""
        return not (self.settings.x5c and self.certificate_status().state is ExpiryState.EXPIRED)

    def _sign(self, requester: Requester, granted: list[Scope]) -> IssuedToken:
        if not self.can_sign():
            # A registry rejects an x5c certificate outside its validity dates: a token signed
            # now would only fail later, at the registry, as a confusing 401.
            raise SigningUnavailableError(
                "no token can be issued: the signing certificate has expired; "
                "the administrator must rotate the key (registry-auth keys rotate)"
            )
        key = self.keyring.active
        now = int(self._clock())
        ttl = self.settings.token_ttl
        jti = self._id_source()
        claims = build_claims(
            issuer=self.settings.issuer,
            subject=requester.account or "",
            audience=requester.service,
            access=granted,
            issued_at=now,
            ttl=ttl,
            jti=jti,
        )
        token = sign_token(key, claims, x5c=self.settings.x5c)
        return IssuedToken(token, now, ttl, requester.account, granted, key.kid, jti)
