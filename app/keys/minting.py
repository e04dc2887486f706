"""Minting tokens: claims -> signature, or the same token again while it may be reused.

Where the signature runs was measured (docs/performance.md): with one server process, in a
thread pool (RSA signing releases the GIL, so threads add the other cores); with a worker
process per core, inline on the event loop — every core is already busy, and the thread hop
plus the GIL hand-back cost ~25% of the fresh-token rate there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

from app.keys.model import KeyRing
from app.keys.reuse import SignedToken, TokenReuse
from app.keys.signing import sign_token
from app.pools import WorkerPool
from app.protocol.scopes import Scope
from app.protocol.tokens import build_claims
from app.settings import Settings


# A NamedTuple, not a frozen dataclass: one is built for every token, and a frozen dataclass's
# __init__ pays ~1,200 instructions per field (docs/performance.md).
class Grant(NamedTuple):
    """What a token says: who, for which service, which access."""

    account: str | None
    service: str
    access: tuple[Scope, ...]


class Minter:
    def __init__(self, settings: Settings, id_source: Callable[[], str]) -> None:
        self._settings = settings
        self._id_source = id_source
        self._reuse = (
            TokenReuse(settings.token_reuse_min_remaining, settings.token_reuse_size)
            if settings.token_reuse
            else None
        )
        self._threads = WorkerPool("token-signing") if settings.workers == 1 else None

    async def aclose(self) -> None:
        if self._threads is not None:
            await self._threads.aclose()

    async def mint(
        self, ring: KeyRing, grant: Grant, now: int, state: Sequence[object] = ()
    ) -> tuple[SignedToken, bool]:
        """A token for `grant`, and whether it was signed before; with reuse on, the one
        already signed for it under this ring and this `state` (policy, users: the objects
        themselves) while enough of it remains."""
        if self._reuse is None:
            return await self._sign(ring, grant, now), False
        current = (ring, *state)
        signed = self._reuse.get(grant, current, now)
        if signed is not None:
            return signed, True
        signed = await self._sign(ring, grant, now)
        self._reuse.put(grant, current, signed)
        return signed, False

    async def _sign(self, ring: KeyRing, grant: Grant, now: int) -> SignedToken:
        key, ttl, jti = ring.active, self._settings.token_ttl, self._id_source()
        claims = build_claims(
            issuer=self._settings.issuer,
            subject=grant.account or "",
            audience=grant.service,
            access=grant.access,
            issued_at=now,
            ttl=ttl,
            jti=jti,
        )
        sign = partial(sign_token, key, claims, x5c=self._settings.x5c)
        token = sign() if self._threads is None else await self._threads.run(sign)
        return SignedToken(token, now, now + ttl, jti, key.kid)
