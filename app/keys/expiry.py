"""Certificate expiry of the signing key: fine, expiring within the warning window, or expired.

Registries check the validity dates of an `x5c` certificate (protocol.md §4): a token carrying
an expired one is rejected, so the service refuses to sign with it instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class ExpiryState(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    kid: str
    not_after: datetime
    state: ExpiryState

    @property
    def message(self) -> str:
        when = f"{self.not_after:%Y-%m-%d %H:%M}Z"
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
    kid: str, not_after: datetime, now: datetime, window: timedelta
) -> CertificateStatus:
    if now >= not_after:
        state = ExpiryState.EXPIRED
    elif now >= not_after - window:
        state = ExpiryState.EXPIRING
    else:
        state = ExpiryState.OK
    return CertificateStatus(kid, not_after, state)
