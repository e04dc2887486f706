"""The `jwt` backend: a signed token from an OpenID Connect issuer, given as the password.

CI systems hand each job a short-lived ID token (GitLab CI `id_tokens`, GitHub Actions' OIDC
token, a Kubernetes service account token): `docker login -u ci -p "$ID_TOKEN"` then needs no
stored secret. A password that is not a JWT, or one from another issuer, is not this backend's
(NOT_MINE: the next backend may know it). A token from the issuer is accepted when its
signature verifies with one of the issuer's published keys, its `aud` is `audience`, it has not
expired (`leeway` of skew), it was not meant to live longer than `max_lifetime`, and every claim
in `claims` has exactly the configured value; anything else is a wrong password (REJECTED).
The account is the value of `account_claim` (after `account_prefix`), the groups those of
`groups_claim`.

The issuer's keys (JWKS) come from `jwks_url`, or the `jwks_uri` its discovery document names;
PyJWT's PyJWKClient fetches and keeps them, and fetches again for a key id it does not know,
at most once per 30 s (a token with made-up key ids cannot make us hammer the issuer). The
issuer unreachable is an outage (503), as for the other backends. Fetching blocks: it runs in
a worker thread.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import urllib.request
from typing import Any
from urllib.error import HTTPError, URLError

import anyio.to_thread
import jwt

from app.authn.base import AuthResult, Credentials, Outcome, check_groups
from app.backend_settings import ROBOT_PREFIX, JwtBackend, check_key_url
from app.errors import BackendUnavailableError, UserStoreError

log = logging.getLogger(__name__)

DISCOVERY = "/.well-known/openid-configuration"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the issuer's own URLs only


class IssuerKeys:
    """The issuer's signing keys: found from its discovery document once, then kept by PyJWT's
    client. Blocking calls."""

    def __init__(self, config: JwtBackend) -> None:
        self._config = config
        self._context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file is not None else None
        )
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def key_for(self, kid: str | None) -> Any:
        """The public key for `kid`; LookupError when the issuer has none such, OSError when
        it cannot be asked."""
        client = self._jwks()
        try:
            if kid is not None:
                return client.get_signing_key(kid).key
            keys = client.get_signing_keys()
        except jwt.PyJWKClientConnectionError as exc:
            raise OSError(str(exc)) from None
        except jwt.PyJWKClientError as exc:  # no such key, or a JWKS without usable keys
            raise LookupError(str(exc)) from None
        if len(keys) != 1:
            raise LookupError("a token without `kid` from an issuer with several keys")
        return keys[0].key

    def _jwks(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._client is None:
                url = self._config.jwks_url or self._discover()
                self._client = jwt.PyJWKClient(
                    url,
                    cache_jwk_set=self._config.keys_cache > 0,
                    lifespan=max(self._config.keys_cache, 1),
                    timeout=self._config.timeout,
                    ssl_context=self._context,
                    cooldown_duration=30,
                )
            return self._client

    def _discover(self) -> str:
        url = self._config.issuer.rstrip("/") + DISCOVERY
        opener = urllib.request.build_opener(
            _NoRedirects(), urllib.request.HTTPSHandler(context=self._context)
        )
        try:
            with opener.open(url, timeout=self._config.timeout) as answer:
                document = json.load(answer)
        except HTTPError as exc:
            exc.close()  # it holds the answer's connection
            raise OSError(f"{url}: HTTP {exc.code}") from None
        except (URLError, OSError, ValueError) as exc:
            raise OSError(f"{url}: {getattr(exc, 'reason', exc)}") from None
        jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
        if not isinstance(jwks_uri, str):
            raise OSError(f"{url}: no `jwks_uri` in the discovery document")
        try:
            check_key_url(jwks_uri)
        except ValueError as exc:
            raise OSError(f"{url}: jwks_uri {jwks_uri!r} {exc}") from None
        return jwks_uri


class JwtAuthenticator:
    def __init__(self, config: JwtBackend, keys: IssuerKeys | None = None) -> None:
        self._config = config
        self._keys = keys if keys is not None else IssuerKeys(config)

    async def aclose(self) -> None:
        pass

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        token = credentials.password.get_secret_value()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return AuthResult(Outcome.NOT_MINE)  # not a token: another backend's password
        if unverified.get("iss") != self._config.issuer:
            return AuthResult(Outcome.NOT_MINE)
        if header.get("alg") not in self._config.algorithms:
            return self._refused(credentials, f"algorithm {header.get('alg')!r} not accepted")
        kid = header.get("kid")
        try:
            key = await anyio.to_thread.run_sync(
                self._keys.key_for, kid if isinstance(kid, str) else None
            )
        except LookupError as exc:
            return self._refused(credentials, str(exc))
        except OSError as exc:
            log.warning("jwt backend %s: the issuer's keys: %s", self._config.label, exc)
            raise BackendUnavailableError(self._config.label, "issuer keys unavailable") from None
        return self._verified(credentials, token, key)

    def _verified(self, credentials: Credentials, token: str, key: Any) -> AuthResult:
        config = self._config
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(config.algorithms),
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return self._refused(credentials, str(exc))
        lifetime = _number(claims.get("exp")) - _number(claims.get("iat"))
        if lifetime > config.max_lifetime:
            return self._refused(credentials, f"meant to live {lifetime:.0f} s (max_lifetime)")
        for name, wanted in config.claims.items():
            if claims.get(name) != wanted:
                return self._refused(credentials, f"claim {name!r} is not {wanted!r}")
        account = _account(claims.get(config.account_claim), config.account_prefix)
        if account is None:
            return self._refused(credentials, f"no account name in claim {config.account_claim!r}")
        groups = _groups(claims.get(config.groups_claim)) if config.groups_claim else frozenset()
        if groups is None:
            return self._refused(credentials, f"claim {config.groups_claim!r} holds no groups")
        return AuthResult(Outcome.ACCEPTED, account, groups)

    def _refused(self, credentials: Credentials, why: str) -> AuthResult:
        log.info(
            "jwt backend %s refused the token of login %r: %s",
            self._config.label,
            credentials.account,
            why,
        )
        return AuthResult(Outcome.REJECTED)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _account(value: Any, prefix: str) -> str | None:
    """A claim's value as an account name: one line of printable text, no outer spaces, not a
    robot's (those are the robot store's alone)."""
    if not isinstance(value, str) or not value or value != value.strip():
        return None
    account = prefix + value
    if not account.isprintable() or account.startswith(ROBOT_PREFIX):
        return None
    return account


def _groups(value: Any) -> frozenset[str] | None:
    try:
        return check_groups([value] if isinstance(value, str) else value, "groups")
    except UserStoreError:
        return None
