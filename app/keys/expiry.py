"""The validity of the signing key's certificate: fine, expiring within the warning window,
expired, or not valid yet.

Registries check the validity dates of an `x5c` certificate (protocol.md §4): a token carrying
a certificate outside them is rejected, so the service refuses to sign with it instead. A
certificate not valid yet comes from a host whose clock ran ahead when the key was made (its
start is backdated only 5 minutes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from app.keys.model import KeyRing

log = logging.getLogger(__name__)


class ExpiryState(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"


UNUSABLE = frozenset({ExpiryState.EXPIRED, ExpiryState.NOT_YET_VALID})


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    kid: str
    not_before: datetime
    not_after: datetime
    state: ExpiryState

    @property
    def message(self) -> str:
        when = f"{self.not_after:%Y-%m-%d %H:%M}Z"
        if self.state is ExpiryState.NOT_YET_VALID:
            return (
                f"the certificate of the active key {self.kid} is not valid before "
                f"{self.not_before:%Y-%m-%d %H:%M:%S}Z, and registries reject tokens carrying it "
                "until then: was the key made on a host whose clock ran ahead? Check this "
                "host's clock, or add a fresh key and promote it (`registry-auth keys rotate`)"
            )
        if self.state is ExpiryState.EXPIRED:
            return (
                f"the certificate of the active key {self.kid} expired at {when}: "
                "run `registry-auth keys rotate` and follow its steps"
            )
        if self.state is ExpiryState.EXPIRING:
            return (
                f"the certificate of the active key {self.kid} expires at {when}: "
                "rotate the key before then (`registry-auth keys rotate`)"
            )
        return f"the certificate of the active key {self.kid} is valid until {when}"


def certificate_status(
    kid: str, not_before: datetime, not_after: datetime, now: datetime, window: timedelta
) -> CertificateStatus:
    if now < not_before:
        state = ExpiryState.NOT_YET_VALID
    elif now >= not_after:
        state = ExpiryState.EXPIRED
    elif now >= not_after - window:
        state = ExpiryState.EXPIRING
    else:
        state = ExpiryState.OK
    return CertificateStatus(kid, not_before, not_after, state)


class ExpiryWatch:
    """The active certificate's expiry state, logged once whenever it changes (kid or state).

    `state()` runs for every token, so it works the state out again only when the active key
    changes or the clock leaves the span the state holds in.
    """

    def __init__(
        self, keyring: Callable[[], KeyRing], clock: Callable[[], float], warning_days: int
    ) -> None:
        self._keyring = keyring
        self._clock = clock
        self._warning_days = warning_days
        self._last: tuple[str, ExpiryState] | None = None
        self._span: tuple[object, float, float, ExpiryState] | None = None

    def status(self) -> CertificateStatus:
        key = self._keyring().active
        window = timedelta(days=self._warning_days)
        now = datetime.fromtimestamp(self._clock(), UTC)
        status = certificate_status(key.kid, key.not_before, key.not_after, now, window)
        if (status.kid, status.state) != self._last:
            self._last = (status.kid, status.state)
            level = logging.INFO if status.state is ExpiryState.OK else logging.WARNING
            log.log(level, "%s", status.message)
        return status

    def state(self) -> ExpiryState:
        """status().state, from the span it was last worked out for while that holds."""
        key, now = self._keyring().active, self._clock()
        kept = self._span
        if kept is not None and kept[0] is key and kept[1] <= now < kept[2]:
            return kept[3]
        state = self.status().state
        starts, expires = key.not_before.timestamp(), key.not_after.timestamp()
        warns = max(starts, expires - self._warning_days * 86400)
        low, high = {
            ExpiryState.NOT_YET_VALID: (-math.inf, starts),
            ExpiryState.OK: (starts, warns),
            ExpiryState.EXPIRING: (warns, expires),
            ExpiryState.EXPIRED: (expires, math.inf),
        }[state]
        self._span = (key, low, high, state)
        return state
