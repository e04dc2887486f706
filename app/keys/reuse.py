"""Signed tokens kept for reuse: the same grant may be served the same token while enough of
its lifetime remains (a signature costs ~1 ms of CPU; a dictionary look-up, microseconds).

The caller keys entries by everything that shapes a token's content (account, service, granted
access) and passes the current state (key ring, policy, users: the objects themselves); an
entry made under any other state is never served. Size is bounded; the least recently used
entry goes first, and an entry past its reuse window is dropped when next looked at.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from app.settings import SHORTEST_TOKEN_LIFETIME


# A NamedTuple, not a frozen dataclass: one is built for every token, and a frozen dataclass's
# __init__ pays ~1,200 instructions per field (docs/performance.md).
class SignedToken(NamedTuple):
    token: str
    issued_at: int
    expires_at: int
    jti: str
    kid: str


@dataclass(frozen=True, slots=True)
class _Entry:
    signed: SignedToken
    state: tuple[object, ...]


class TokenReuse:
    def __init__(self, min_remaining: float, max_entries: int) -> None:
        self._min_remaining = min_remaining
        self._max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, state: Sequence[object], now: int) -> SignedToken | None:
        """The token for `key` if it was signed under this very `state` and enough remains."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        signed = entry.signed
        lifetime = signed.expires_at - signed.issued_at
        # At least a minute left, whatever the share: clients take a shorter `expires_in` as
        # 60 s and would go on sending the token after it expired (with token_ttl under 60,
        # no token is reused).
        enough = max(self._min_remaining * lifetime, SHORTEST_TOKEN_LIFETIME)
        fresh = signed.expires_at - now >= enough and now >= signed.issued_at
        if fresh and _same(entry.state, state):
            self._entries.move_to_end(key)
            return signed
        del self._entries[key]
        return None

    def put(self, key: Hashable, state: Sequence[object], signed: SignedToken) -> None:
        self._entries[key] = _Entry(signed, tuple(state))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _same(kept: tuple[object, ...], current: Sequence[object]) -> bool:
    # Identity, not equality: every reload builds new objects, and a reloaded file means the
    # token must be signed afresh even when the content happens to compare equal.
    return len(kept) == len(current) and all(a is b for a, b in zip(kept, current, strict=True))
