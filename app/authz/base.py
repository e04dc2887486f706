"""The authorization contract: granted = requested ∩ allowed, one entry per requested scope."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple, Protocol

from app.protocol.scopes import Scope


# A NamedTuple, not a frozen dataclass: one is built for every token, and a frozen dataclass's
# __init__ pays ~1,200 instructions per field (docs/performance.md).
class Requester(NamedTuple):
    """Who asks: an authenticated account (with groups) or anonymous (account None)."""

    account: str | None
    service: str
    groups: frozenset[str] = frozenset()
    ip: IPv4Address | IPv6Address | None = None

    @property
    def anonymous(self) -> bool:
        return self.account is None


class Authorizer(Protocol):
    def authorize(self, requester: Requester, scopes: Sequence[Scope]) -> list[Scope]:
        """The same scopes, in order, each holding only the actions granted (maybe none)."""
        ...
