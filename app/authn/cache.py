"""A result cache in front of a slow backend (LDAP, webhook).

Keys are HMAC-SHA256 of the credentials under a per-process random key, so the cache never
holds a password nor anything a stolen memory dump could test guesses against offline once the
process is gone. Only accepted results are cached: a failure is never remembered as success,
and a password changed at the backend is refused as soon as its entry (TTL-bounded) expires.
Size is bounded; the least recently used entry goes first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from app.authn.base import Authenticator, AuthResult, Credentials
from app.metrics import metrics

Clock = Callable[[], float]


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
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)
        self._per_client = per_client  # the webhook may decide by service and client address
        self._entries: OrderedDict[bytes, tuple[float, AuthResult]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        digest = self._digest(credentials)
        now = self._clock()
        hit = self._entries.get(digest)
        if hit is not None:
            if hit[0] > now:
                self._entries.move_to_end(digest)
                metrics().cache_hits.inc()
                return hit[1]
            del self._entries[digest]
        result = await self._inner.authenticate(credentials)
        if result.accepted:
            self._store(digest, now + self._ttl, result)
        return result

    def _store(self, digest: bytes, expires: float, result: AuthResult) -> None:
        self._entries[digest] = (expires, result)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _digest(self, credentials: Credentials) -> bytes:
        fields = [credentials.account, credentials.password.get_secret_value()]
        if self._per_client:
            fields += [credentials.service or "", credentials.client_ip or ""]
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for value in fields:
            encoded = value.encode("utf-8", "surrogateescape")
            mac.update(len(encoded).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
            mac.update(encoded)
        return mac.digest()
