"""Issuing a token: authenticate -> authorize -> claims -> sign. Knows no HTTP."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any, NamedTuple

import anyio.to_thread

from app.assembly import (
    authz_webhook_from_settings,
    login_throttle_from_settings,
    policy_authorizer,
    refresh_tokens_from_settings,
    state_closers,
)
from app.authn.base import AccountLookup, Authenticator, AuthResult, Credentials
from app.authn.build import build_authentication
from app.authn.robots import RobotExpiry
from app.authz.base import Authorizer, Requester
from app.authz.default import DefaultAuthorizer
from app.authz.webhook import AuthzWebhook
from app.errors import (
    InvalidGrantError,
    SigningUnavailableError,
    StateStoreError,
    UnknownServiceError,
)
from app.keys.expiry import UNUSABLE, CertificateStatus, ExpiryState, ExpiryWatch
from app.keys.minting import Grant, Minter
from app.keys.model import KeyRing
from app.keys.signing import base64url
from app.keys.store import load_keyring, ring_files
from app.log_limit import LogEvery
from app.login import GuardedLogin
from app.metrics import count, metrics
from app.protocol.oauth import PasswordGrant, RefreshGrant
from app.protocol.scopes import Scope
from app.protocol.tokens import TokenRequest
from app.reload import Reloadable
from app.settings import Settings
from app.state.attempts import LoginThrottle
from app.state.model import RefreshRecord
from app.state.refresh import RefreshTokens

log = logging.getLogger(__name__)
_outage_log = LogEvery(log)  # while the store is down: once a minute, with a count

Clock = Callable[[], float]
IdSource = Callable[[], str]
Sleep = Callable[[float], Awaitable[None]]
IPAddress = IPv4Address | IPv6Address


def new_jti() -> str:
    """A unique token id from the OS CSPRNG (128 bits), base64url like `secrets.token_urlsafe`."""
    return base64url(os.urandom(16)).decode("ascii")


# A NamedTuple, not a frozen dataclass: one is built for every token, and a frozen dataclass's
# __init__ pays ~1,200 instructions per field (docs/performance.md).
class IssuedToken(NamedTuple):
    token: str
    issued_at: int
    expires_in: int
    account: str | None
    granted: list[Scope]
    kid: str
    jti: str
    refresh_token: str | None = None
    reuse: bool = False  # a still-valid token handed out again (token reuse)


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
        refresh_tokens: RefreshTokens | None = None,
        throttle: LoginThrottle | None = None,
        sleep: Sleep = anyio.sleep,
        robot_expiry: RobotExpiry | None = None,
        authz_webhook: AuthzWebhook | None = None,
    ) -> None:
        self.settings = settings
        self._keyring = keyring
        self.authenticator = authenticator
        self.authorizer = authorizer or DefaultAuthorizer()
        self.authz_webhook = authz_webhook
        self._clock = clock
        self.reloadables = tuple(reloadables)
        self._expiry = ExpiryWatch(keyring, clock, settings.certificate_warning_days)
        self._expiry.status()  # logged at start
        self.refresh_tokens = refresh_tokens
        self._minter = Minter(settings, id_source)
        hook_closers = (authz_webhook.aclose,) if authz_webhook is not None else ()
        self._closers = (*closers, *hook_closers, self._minter.aclose)
        self.throttle = throttle
        self._login = GuardedLogin(authenticator, throttle, realm=settings.realm, sleep=sleep)
        self._services = frozenset(settings.services)
        self.robot_expiry = robot_expiry
        if robot_expiry is not None:
            robot_expiry.log()  # at start; /readyz and the metrics say it from then on

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = time.time) -> TokenService:
        """Load keys and users; KeyStoreError/UserStoreError say what is wrong."""
        keys_dir = settings.keys_dir
        keyring = Reloadable(
            "key ring", lambda: load_keyring(keys_dir), lambda: ring_files(keys_dir)
        )
        reloadables: list[Reloadable[Any]] = [keyring]
        authentication = build_authentication(settings)
        reloadables += authentication.reloadables
        authorizer = policy_authorizer(settings, reloadables)
        refresh_tokens = refresh_tokens_from_settings(settings)
        throttle = login_throttle_from_settings(settings, clock)
        authz_webhook = authz_webhook_from_settings(settings)
        return cls(
            settings,
            keyring.get,
            authenticator=authentication.authenticator,
            authorizer=authorizer,
            reloadables=reloadables,
            closers=[*authentication.closers, *state_closers(refresh_tokens, throttle)],
            clock=clock,
            refresh_tokens=refresh_tokens,
            throttle=throttle,
            robot_expiry=(
                RobotExpiry(authentication.robots, settings.robot_warning_days, clock)
                if authentication.robots
                else None
            ),
            authz_webhook=authz_webhook,
        )

    async def aclose(self) -> None:
        """Close the backends' connections (LDAP pool, webhook client, etcd state stores)."""
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
        if credentials is None:
            requester = Requester(None, service, frozenset(), client_ip)
            return await self._sign(requester, await self._authorize(requester, request.scopes))
        where = address_text(client_ip)
        result = await self._login.check(
            Credentials(credentials.account, credentials.password, service, where)
        )
        # docker login asks with offline_token=true and client_id=docker; no client_id (or an
        # empty one), no binding, so no refresh token.
        client_id = (request.client_id or None) if request.offline_token else None
        return await self._issue_for(result, service, request.scopes, client_ip, client_id)

    async def grant_password(
        self, grant: PasswordGrant, client_ip: IPAddress | None = None
    ) -> IssuedToken:
        """The OAuth2 password grant: like a GET with Basic credentials."""
        service = self._check_service(grant.service)
        where = address_text(client_ip)
        credentials = Credentials(grant.username, grant.password, service=service, client_ip=where)
        result = await self._login.check(credentials)
        client_id = grant.client_id if grant.offline else None
        return await self._issue_for(result, service, grant.scopes, client_ip, client_id)

    async def grant_refresh(
        self, grant: RefreshGrant, client_ip: IPAddress | None = None
    ) -> IssuedToken:
        """The OAuth2 refresh grant: a fresh token for the refresh token's account, authorized
        afresh, and the same refresh token back. InvalidGrantError (401) when it is dead."""
        service = self._check_service(grant.service)
        tokens, lookup = self._refresh_parts()
        now = int(self._clock())
        token = grant.refresh_token.get_secret_value()
        try:
            record = tokens.check_now(token, service, grant.client_id, now)
            if record is None:
                record = await anyio.to_thread.run_sync(
                    tokens.check, token, service, grant.client_id, now
                )
            groups = await self._current_groups(tokens, lookup, record)
        except InvalidGrantError as exc:
            whose = "" if exc.account is None else f" (account {exc.account!r})"
            log.info("refresh grant refused: %s%s", exc.reason, whose)
            count(metrics().refresh_grants.labels("refused"))
            raise
        count(metrics().refresh_grants.labels("granted"))
        if tokens.needs_touch(record, now):
            await anyio.to_thread.run_sync(tokens.touch, record, now)
        requester = Requester(record.account, service, groups, client_ip)
        issued = await self._sign(requester, await self._authorize(requester, grant.scopes))
        return issued._replace(refresh_token=token)

    async def _authorize(self, requester: Requester, scopes: Sequence[Scope]) -> list[Scope]:
        """The ACL's grant, narrowed by the authorization webhook when there is one."""
        granted = self.authorizer.authorize(requester, scopes)
        if self.authz_webhook is None:
            return granted
        return await self.authz_webhook.restrict(requester, granted)

    def _refresh_parts(self) -> tuple[RefreshTokens, AccountLookup]:
        if self.refresh_tokens is None or not isinstance(self.authenticator, AccountLookup):
            raise InvalidGrantError("this server keeps no refresh tokens")
        return self.refresh_tokens, self.authenticator

    async def _current_groups(
        self, tokens: RefreshTokens, lookup: AccountLookup, record: RefreshRecord
    ) -> frozenset[str]:
        """The account's groups now; the token dies when the account or its password changed."""
        state = await lookup.account_state(record.account)
        if state is None or state.credential_version != record.credential_version:
            reason = "account removed" if state is None else "password changed"
            await anyio.to_thread.run_sync(tokens.revoke, [record], reason)
            raise InvalidGrantError(f"refresh token {record.id}: {reason}", record.account)
        return state.groups

    async def _issue_for(
        self,
        result: AuthResult,
        service: str,
        scopes: Sequence[Scope],
        client_ip: IPAddress | None,
        offline_client_id: str | None,
    ) -> IssuedToken:
        requester = Requester(result.account, service, result.groups, client_ip)
        issued = await self._sign(requester, await self._authorize(requester, scopes))
        if offline_client_id is None or result.account is None:
            return issued
        # Now, not the access token's `iat`: a reused one may be minutes old.
        refresh_token = await self._new_refresh_token(
            result, service, offline_client_id, int(self._clock())
        )
        return issued._replace(refresh_token=refresh_token)

    async def _new_refresh_token(
        self, result: AuthResult, service: str, client_id: str, now: int
    ) -> str | None:
        """None when this server cannot re-check the account later (no store, or a backend
        without credential versions): the client then keeps its password, as before."""
        if (
            self.refresh_tokens is None
            or result.credential_version is None
            or result.account is None
        ):
            return None
        if not isinstance(self.authenticator, AccountLookup):
            return None
        try:
            token, _ = await anyio.to_thread.run_sync(
                self.refresh_tokens.issue,
                result.account,
                service,
                client_id,
                result.credential_version,
                now,
            )
        except StateStoreError as exc:
            # The login itself is good: a 503 would fail every `docker login` while the store
            # is down. Without a refresh token the client keeps its password, as it does with
            # a server that keeps none.
            _outage_log.log(
                logging.WARNING,
                "refresh",
                "refresh-token store unavailable, %r logged in without a refresh token: %s",
                result.account,
                exc,
            )
            count(metrics().refresh_tokens_not_issued)
            return None
        return token

    def _check_service(self, service: str | None) -> str:
        if not service:  # absent, or `service=`: the registry's challenge named none
            return self.settings.service
        if service not in self._services:
            raise UnknownServiceError(
                service, self.settings.service, others=len(self._services) > 1
            )
        return service

    def certificate_status(self) -> CertificateStatus:
        """Expiry of the active certificate; logged once whenever it changes (kid or state)."""
        return self._expiry.status()

    def can_sign(self) -> bool:
        """False when every token would carry in `x5c` a certificate outside its validity
        dates (expired, or not valid yet)."""
        return not (self.settings.x5c and self._expiry.state() in UNUSABLE)

    async def _sign(self, requester: Requester, granted: list[Scope]) -> IssuedToken:
        if not self.can_sign():
            # A registry rejects an x5c certificate outside its validity dates: a token signed
            # now would only fail later, at the registry, as a confusing 401.
            why = (
                "is not valid yet"
                if self._expiry.state() is ExpiryState.NOT_YET_VALID
                else "has expired"
            )
            raise SigningUnavailableError(
                f"no token can be issued: the signing certificate {why}; "
                "the administrator must rotate the key (registry-auth keys rotate)"
            )
        now = int(self._clock())
        grant = Grant(requester.account, requester.service, tuple(granted))
        state = [item.current for item in self.reloadables]  # a reload means a new token
        signed, reused = await self._minter.mint(self.keyring, grant, now, state)
        # A reused token is answered as issued now, with the seconds it has left: clients
        # expire a token at issued_at + expires_in (docker, containers/image), or at the
        # moment of the answer + expires_in; both then land on its own `exp`. (With its `iat`
        # as issued_at, a client expired it early by its age, and with a share under half
        # took it as expired on arrival.)
        return IssuedToken(
            signed.token,
            now,
            signed.expires_at - now,
            requester.account,
            granted,
            signed.kid,
            signed.jti,
            reuse=reused,
        )


@functools.lru_cache(maxsize=4096)  # str() of an address object takes microseconds, every time
def address_text(address: IPAddress | None) -> str | None:
    return None if address is None else str(address)
