"""A result cache in front of a slow check (bcrypt, LDAP, webhook), with single-flight.

Keys are HMAC-SHA256 of the credentials under a per-process random key, so the cache never
holds a password nor anything a stolen memory dump could test guesses against offline once the
process is gone. Only accepted results are cached: a failure is never remembered as success.

A backend that can name the current version of an account's entry cheaply (htpasswd, static
users: the stored hash, and the groups) passes `version`; it is part of the key, so a changed
password or a removed account misses at once, without waiting for the TTL. Other backends
(LDAP, webhook) are cached for the TTL alone. Size is bounded; the least recently used entry
goes first.

Concurrent checks of the same credentials collapse into one (single-flight): a storm of
identical logins costs one bcrypt check, not one per request.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from app.authn.base import AccountLookup, AccountState, Authenticator, AuthResult, Credentials
from app.metrics import count, metrics

Clock = Callable[[], float]
# The current version of an account's entry; None when the backend does not know the account.
Version = Callable[[str], bytes | None]
_UNKNOWN = b"\x00unknown"  # never a stored version: such results are not cached


def _no_version(_: str) -> bytes:
    return b""


class CachingAuthenticator:
    def __init__(
        self,
        inner: Authenticator,
        *,
        ttl: float,
        max_entries: int,
        clock: Clock = time.monotonic,
        key: bytes | None = None,
        per_client: bool = False,
        version: Version | None = None,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        # Keyed once: each digest copies this state instead of hashing the key's two pads again
        # (a one-shot hmac.digest also looks the hash up by name in OpenSSL every time).
        key = key if key is not None else secrets.token_bytes(32)
        self._mac = hmac.new(key, digestmod="sha256")
        self._per_client = per_client  # the webhook may decide by service and client address
        self._version = version or _no_version
        self._entries: OrderedDict[bytes, tuple[float, AuthResult]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[AuthResult]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def inner(self) -> Authenticator:
        return self._inner

    async def account_state(self, account: str) -> AccountState | None:
        """The inner backend's lookup (refresh grants), never cached; None if it has none."""
        if isinstance(self._inner, AccountLookup):
            return await self._inner.account_state(account)
        return None

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        version = self._version(credentials.account)
        digest = self._digest(credentials, _UNKNOWN if version is None else version)
        hit = self._entries.get(digest)
        if hit is not None:
            if hit[0] > self._clock():
                self._entries.move_to_end(digest)
                count(metrics().cache_hits)
                return hit[1]
            del self._entries[digest]
        flight = self._inflight.get(digest)
        if flight is None:
            flight = asyncio.ensure_future(self._check(credentials, digest, version))
            self._inflight[digest] = flight
            flight.add_done_callback(lambda done: self._landed(digest, done))
        # shield: one waiter giving up (client gone) must not cancel the check for the others.
        return await asyncio.shield(flight)

    async def _check(
        self, credentials: Credentials, digest: bytes, version: bytes | None
    ) -> AuthResult:
        result = await self._inner.authenticate(credentials)
        # Cache only a success checked against the entry that is still current: a reload during
        # the check (password changed back and forth) must not leave a success under a key
        # that a later, different entry could hit.
        if (
            result.accepted
            and version is not None
            and self._version(credentials.account) == version
        ):
            self._store(digest, self._clock() + self._ttl, result)
        return result

    def _landed(self, digest: bytes, flight: asyncio.Future[AuthResult]) -> None:
        if self._inflight.get(digest) is flight:
            del self._inflight[digest]
        if not flight.cancelled():
            flight.exception()  # retrieved here: every waiter may have gone away

    def _store(self, digest: bytes, expires: float, result: AuthResult) -> None:
        self._entries[digest] = (expires, result)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _digest(self, credentials: Credentials, version: bytes) -> bytes:
        fields = [credentials.account, credentials.password.get_secret_value()]
        if self._per_client:
            fields += [credentials.service or "", credentials.client_ip or ""]
        parts = [field.encode("utf-8", "surrogateescape") for field in fields]
        parts.append(version)
        # Length-prefixed: no ambiguous joins.
        mac = self._mac.copy()
        mac.update(b"".join(len(part).to_bytes(8, "big") + part for part in parts))
        return mac.digest()
