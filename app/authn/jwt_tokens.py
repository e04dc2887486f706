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

The issuer's keys (JWKS) are fetched here, on the event loop, with httpx (IssuerKeys): no
proxy from the environment, no redirects, at most MAX_DOCUMENT bytes, the discovery document's
`issuer` checked. One fetch at a time per worker (the others wait for it); a key id it does not
know makes it fetch again at most every UNKNOWN_KID_REFETCH seconds, so tokens with made-up
key ids cannot make it hammer the issuer nor hold up the logins whose key it knows; after a
failed fetch it does not try again for FAILURE_COOLDOWN seconds, and keys it already has go on
verifying (logged) until the issuer answers again. No key at all and no answer: 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from app.authn.base import AuthResult, Credentials, Outcome, check_groups
from app.backend_settings import ROBOT_PREFIX, JwtBackend, check_key_url
from app.errors import BackendUnavailableError, UserStoreError
from app.http_hook import tls_context
from app.protocol.scopes import shown

log = logging.getLogger(__name__)

Clock = Callable[[], float]

DISCOVERY = "/.well-known/openid-configuration"
MAX_DOCUMENT = 64 * 1024  # a discovery document or key set; real ones are 1-10 KiB
UNKNOWN_KID_REFETCH = 30.0  # seconds between fetches asked for by a key id we do not know
FAILURE_COOLDOWN = 5.0  # seconds without asking again after the issuer failed to answer
FETCH_DEADLINE = 2  # a whole fetch (discovery and keys) within this many `timeout`s
MAX_STALE = 86400.0  # keys the issuer has not confirmed for a day no longer verify
MAX_ACCOUNT_LENGTH = 256

# What each accepted algorithm verifies with: key type, and curve for EC.
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
}


class IssuerDown(Exception):  # noqa: N818 - a condition, not a programming error
    """The issuer's keys could not be fetched; the message says why (no secrets in it)."""


class NotFetchedYet(Exception):  # noqa: N818 - a condition, not a programming error
    """A key id not among the keys, which were fetched moments ago: asked again in
    `retry_after` seconds (a key the issuer has just started using, or a made-up one)."""

    def __init__(self, retry_after: float) -> None:
        retry_after = max(1.0, retry_after)  # a slow fetch may have used the whole gate
        super().__init__(
            f"not among the issuer's keys; they are fetched again in {retry_after:.0f} s"
        )
        self.retry_after = retry_after


class IssuerKeys:
    """The issuer's published signing keys, by key id (`None` for a key published without
    one; RFC 7517 lets keys of different types share an id), fetched and kept per worker."""

    def __init__(
        self,
        config: JwtBackend,
        *,
        key: str = "auth_backends[]",
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        self._client = client if client is not None else build_client(config, key)
        self._clock = clock
        self._keys: dict[str | None, list[dict[str, Any]]] = {}
        # Key ids of tokens verified against the one key the issuer publishes without an id,
        # since that key was fetched (see key_for).
        self._lone_kids: set[str] = set()
        self._built: dict[tuple[str | None, str], jwt.PyJWK | None] = {}
        self._fetched_at = -math.inf  # last good fetch
        self._tried_at = -math.inf  # last fetch started, good or not
        self._failed = False  # whether the last fetch failed
        self._fetch: asyncio.Future[None] | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The issuer's key `kid` for `algorithm`; None when the key is not one for it.
        NotFetchedYet when the issuer publishes no key `kid` (asked moments ago, or just now):
        never a wrong password, as the issuer may sign with a key before publishing it.
        IssuerDown when it does not know and cannot ask."""
        now = self._clock()
        age = now - self._fetched_at
        if kid is None and len(self._keys) > 1 and age < MAX_STALE:
            return None  # which one? a token from an issuer with several keys names its key
        if self._find(kid) and age < MAX_STALE:
            if age >= self._config.keys_cache:
                self._start_fetch()  # in the background: the key in hand verifies meanwhile
            return self._key(kid, algorithm)
        gate = self._tried_at + UNKNOWN_KID_REFETCH - now
        if self._fetch is None and not self._failed and age < MAX_STALE and gate > 0:
            raise NotFetchedYet(gate)
        fetch = self._start_fetch()
        if fetch is None:
            raise IssuerDown("it failed to answer moments ago")
        # Shielded: a waiter that gives up (its client left) does not cancel everyone's fetch.
        await asyncio.shield(fetch)
        if kid is None and len(self._keys) > 1:
            return None
        if kid is not None and not self._find(kid) and list(self._keys) == [None]:
            # Its one key, published without an id, as fetched just now: the key of a token
            # that names one (else every login was a 503, the keys fetched anew for ever).
            # Only once fetched for it: a key cached before a rotation would refuse (and
            # count) the new key's tokens.
            self._lone_kids.add(kid)
        if not self._find(kid):  # an issuer may sign with a key before it publishes it
            raise NotFetchedYet(self._tried_at + UNKNOWN_KID_REFETCH - self._clock())
        return self._key(kid, algorithm)

    def _find(self, kid: str | None) -> list[dict[str, Any]]:
        if kid is None and len(self._keys) > 1:
            return []  # which one? a token from an issuer with several keys names its key
        if kid is None:
            return next(iter(self._keys.values()), [])
        if kid in self._lone_kids:  # see key_for
            return self._keys.get(None, [])
        return self._keys.get(kid, [])

    def _key(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        if (kid, algorithm) not in self._built:  # parsed once per key and algorithm
            usable = (_usable(entry, algorithm) for entry in self._find(kid))
            self._built[kid, algorithm] = next((key for key in usable if key is not None), None)
        return self._built[kid, algorithm]

    def _start_fetch(self) -> asyncio.Future[None] | None:
        """The fetch under way, else a new one; None when the last one failed moments ago."""
        if self._fetch is None:
            if self._failed and self._clock() - self._tried_at < FAILURE_COOLDOWN:
                return None
            self._tried_at = self._clock()
            self._fetch = asyncio.ensure_future(self._fetch_keys())
            self._fetch.add_done_callback(self._fetched)
        return self._fetch

    def _fetched(self, fetch: asyncio.Future[None]) -> None:
        self._fetch = None
        problem = "cancelled" if fetch.cancelled() else fetch.exception()
        self._failed = problem is not None
        if problem is not None:
            age = self._clock() - self._fetched_at
            kept = f"; the keys fetched {age:.0f} s ago still verify" if age < MAX_STALE else ""
            log.warning(
                "jwt backend %s: cannot fetch the issuer's keys: %s%s",
                self._config.label,
                problem,
                kept if self._keys else "",
            )

    async def _fetch_keys(self) -> None:
        """One fetch, within FETCH_DEADLINE timeouts in all (an issuer trickling its answer
        byte by byte would hold it for days: httpx's timeout bounds each read only)."""
        deadline = FETCH_DEADLINE * self._config.timeout
        try:
            async with asyncio.timeout(deadline):
                await self._fetch_keys_now()
        except IssuerDown:
            raise
        except TimeoutError:
            raise IssuerDown(f"no complete answer within {deadline:g} s") from None
        except Exception as exc:  # noqa: BLE001 - whatever an issuer's answer makes fail
            raise IssuerDown(type(exc).__name__) from None

    async def _fetch_keys_now(self) -> None:
        url = self._config.jwks_url or await self._discover()
        document = await self._get(url)
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise IssuerDown(f"{url!r}: no `keys` list")
        usable = _signing_keys(keys)
        if not usable:
            raise IssuerDown(f"{url!r}: no usable signing key among {len(keys)}")
        self._keys, self._built, self._lone_kids = usable, {}, set()
        self._fetched_at = self._clock()

    async def _discover(self) -> str:
        url = self._config.issuer.rstrip("/") + DISCOVERY
        document = await self._get(url)
        if document.get("issuer") != self._config.issuer:
            # OpenID Connect Discovery 1.0 §4.3: a document for another issuer is not used.
            raise IssuerDown(f"{url!r}: its `issuer` is not {self._config.issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IssuerDown(f"{url!r}: no `jwks_uri`")
        if url.startswith("https:") and not jwks_uri.startswith("https:"):
            # Not a way to make us GET this machine's own http:// services.
            raise IssuerDown(f"{url!r}: `jwks_uri` must be https:// like the issuer")
        try:
            check_key_url(jwks_uri)
        except ValueError as exc:
            raise IssuerDown(f"{url!r}: `jwks_uri` {exc}") from None
        return jwks_uri

    async def _get(self, url: str) -> dict[str, Any]:
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise IssuerDown(f"{url!r}: HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_raw():  # as sent: no inflating of a bomb
                    body += chunk
                    if len(body) > MAX_DOCUMENT:
                        raise IssuerDown(f"{url!r}: larger than {MAX_DOCUMENT} bytes")
        except httpx.HTTPError as exc:
            raise IssuerDown(f"{url!r}: {_transport_problem(exc)}") from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise IssuerDown(f"{url!r}: not JSON") from None
        if not isinstance(document, dict):
            raise IssuerDown(f"{url!r}: not a JSON object")
        return document


# OpenSSL's verify results for a chain that does not end at a CA we trust: self-signed
# certificate, self-signed in the chain, unable to get the local issuer, unable to get issuer.
_UNKNOWN_ISSUER = frozenset({18, 19, 20, 2})


def _transport_problem(exc: httpx.HTTPError) -> str:
    """The error's type, and for an issuer certificate we do not trust, that: it read as
    `ConnectError`, as an issuer that is down does."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            # Only an unknown issuer of the certificate is `ca_file`'s to mend (not a wrong
            # host name, nor an expired certificate).
            unknown = cause.verify_code in _UNKNOWN_ISSUER
            hint = ": give the CA that signed it as `ca_file`" if unknown else ""
            return f"its TLS certificate is not accepted ({cause.verify_message}){hint}"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def build_client(config: JwtBackend, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout),
        verify=tls_context(key, config.ca_file),
        follow_redirects=False,  # the issuer's own URLs only
        trust_env=False,  # a proxy from the environment could hand us keys of its own
        # Uncompressed: the size cap counts the bytes as sent (aiter_raw).
        headers={"Accept": "application/json", "Accept-Encoding": "identity"},
    )


def _signing_keys(keys: list[Any]) -> dict[str | None, list[dict[str, Any]]]:
    """The published keys that can verify a signature, by key id: public RSA and EC keys
    meant for signatures (no `use`, or `use: sig`) that fit one of the algorithms. Others
    (encryption keys, symmetric or unknown types, malformed entries) are left out."""
    usable: dict[str | None, list[dict[str, Any]]] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        if any(_usable(entry, algorithm) is not None for algorithm in KEY_TYPES):
            usable.setdefault(kid, []).append(entry)
    return usable


def _usable(entry: dict[str, Any], algorithm: str) -> jwt.PyJWK | None:
    """`entry` as a key for `algorithm`; None when it is not one: another key type or curve,
    a key published for another algorithm, or not a valid key at all."""
    kty, curve = KEY_TYPES.get(algorithm, ("", None))
    published = entry.get("alg")
    if entry.get("kty") != kty or (curve is not None and entry.get("crv") != curve):
        return None
    if published is not None and published != algorithm:
        return None
    try:
        return jwt.PyJWK(entry, algorithm=algorithm)
    except (jwt.PyJWTError, ValueError, TypeError):
        return None


class JwtAuthenticator:
    def __init__(
        self, config: JwtBackend, keys: IssuerKeys | None = None, *, key: str = "auth_backends[]"
    ) -> None:
        self._config = config
        self._keys = keys if keys is not None else IssuerKeys(config, key=key)

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        token = credentials.password.get_secret_value()
        header = self._header_if_mine(token)
        if header is None:
            return AuthResult(Outcome.NOT_MINE)  # another backend's password
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self._config.algorithms or not (kid is None or isinstance(kid, str)):
            why = f"algorithm {shown(algorithm)} with key id {shown(kid)} not accepted"
            return self._refused(credentials, why)
        try:
            key = await self._keys.key_for(kid, algorithm)
        except IssuerDown:  # logged by the fetch
            raise BackendUnavailableError(self._config.label, "issuer keys unavailable") from None
        except NotFetchedYet as exc:
            # A 503, not a wrong password: after a key rotation, the CI runner's logins would
            # otherwise count towards its block (brute_force) until the next fetch.
            log.info("jwt backend %s: key id %s: %s", self._config.label, shown(kid), exc)
            raise BackendUnavailableError(
                self._config.label, "unknown key id", retry_after=math.ceil(exc.retry_after)
            ) from None
        if key is None:
            why = (
                "it names no key (kid), and the issuer has several"
                if kid is None
                else f"key {shown(kid)} is not an {algorithm} key"
            )
            return self._refused(credentials, why)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            # Checked after the signature: a genuine token, too old. It guesses nothing, so it
            # is not counted (Outcome.EXPIRED): a job's stale token counted against the
            # shared name (`ci`) blocked every job of the runner for the block's length.
            self._refused(credentials, "expired (exp)")
            return AuthResult(Outcome.EXPIRED)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            return self._refused(credentials, type(exc).__name__)
        result = self._judge(claims)
        return result if isinstance(result, AuthResult) else self._refused(credentials, result)

    def _header_if_mine(self, token: str) -> dict[str, Any] | None:
        """The token's header when it is a JWT from our issuer (signature not checked yet)."""
        if token.count(".") != 2 or not token.startswith("eyJ"):
            return None
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        if not isinstance(unverified, dict) or unverified.get("iss") != self._config.issuer:
            return None
        return header

    def _judge(self, claims: dict[str, Any]) -> AuthResult | str:
        """The verified claims -> the login, or why not."""
        config = self._config
        times = [claims[name] for name in ("exp", "iat", "nbf") if name in claims]
        if not all(_is_number(value) for value in times):
            # PyJWT reads "9999999999" as a time too; RFC 7519 §2 says a number.
            return "exp, iat or nbf is not a number"
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > config.max_lifetime:
            return f"meant to live longer than {config.max_lifetime} s (max_lifetime)"
        for name, wanted in config.claims.items():
            if claims.get(name) != wanted:
                return f"claim {name!r} is not {wanted!r}"
        account = _account(claims.get(config.account_claim), config.account_prefix)
        if account is None:
            return f"no account name in claim {config.account_claim!r}"
        groups = _groups(claims.get(config.groups_claim)) if config.groups_claim else frozenset()
        if groups is None:
            return f"claim {config.groups_claim!r} holds no groups"
        return AuthResult(Outcome.ACCEPTED, account, groups)

    def _refused(self, credentials: Credentials, why: str) -> AuthResult:
        log.info(
            "jwt backend %s refused the token of login %s: %s",
            self._config.label,
            shown(credentials.account),
            why,
        )
        return AuthResult(Outcome.REJECTED)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _account(value: Any, prefix: str) -> str | None:
    """A claim's value as an account name: one line of printable text, no outer spaces, not a
    robot's (those are the robot store's alone)."""
    if not isinstance(value, str) or not value or value != value.strip():
        return None
    account = prefix + value
    if (
        len(account) > MAX_ACCOUNT_LENGTH
        or not account.isprintable()
        or account.startswith(ROBOT_PREFIX)
    ):
        return None
    return account


def _groups(value: Any) -> frozenset[str] | None:
    try:
        return check_groups([value] if isinstance(value, str) else value, "groups")
    except UserStoreError:
        return None
