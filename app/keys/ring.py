"""Key rotation as pure state transitions over the entries of keyring.json.

    add      -> a new `next` key (published, not signing)
    promote  -> `next` (or a still-published `retiring` key) becomes `active`;
                the old active key becomes `retiring`, and the time is recorded
    retire   -> a `next` or `retiring` key leaves the ring (and bundle.pem)

Each function takes the entries and the current time and returns new entries, or raises
RotationRefusedError saying why and what to do. No I/O here: app.keys.store applies them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from cryptography import x509

from app.errors import RotationRefusedError
from app.keys.model import Algorithm, KeyState

if TYPE_CHECKING:
    from app.settings import Settings

# The registry accepts a token up to 60 s after its `exp` (protocol.md §4, checked with a real
# registry): a retiring key must stay in the bundle that much longer than the token lifetime.
REGISTRY_LEEWAY = timedelta(seconds=60)
FILE_ID = re.compile(r"[a-z0-9]{1,64}")


@dataclass(frozen=True, slots=True)
class RingEntry:
    """One key as keyring.json records it, with its certificate (never its private key)."""

    id: str
    kid: str
    algorithm: Algorithm
    state: KeyState
    created: datetime
    certificate: x509.Certificate = field(repr=False, compare=False)
    retiring_since: datetime | None = None

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


Entries = tuple[RingEntry, ...]


class _Keyed(Protocol):
    @property
    def kid(self) -> str: ...


Found = TypeVar("Found", bound=_Keyed)


def find(entries: Sequence[Found], kid: str) -> Found:
    """The entry of `kid` (a unique prefix of it is enough: kids are long), in either case:
    the key files are named in lower case. Entries, or keys as keyring.json records them."""
    exact = [entry for entry in entries if entry.kid == kid]
    wanted = kid.upper()
    matches = exact or [entry for entry in entries if kid and entry.kid.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(entry.kid for entry in entries) or "none"
    if not matches:
        raise RotationRefusedError(f"no key {kid!r} in the ring (keys: {known})")
    raise RotationRefusedError(f"{kid!r} matches {len(matches)} keys: give more of the kid")


def add(entries: Sequence[RingEntry], new: RingEntry) -> Entries:
    """Append a `next` key. One next key at a time keeps the runbook unambiguous."""
    waiting = [entry.kid for entry in entries if entry.state is KeyState.NEXT]
    if waiting:
        raise RotationRefusedError(
            f"key {waiting[0]} is already next: promote it (`registry-auth keys promote "
            f"{waiting[0]}`) or drop it (`registry-auth keys retire {waiting[0]}`) before "
            "adding another"
        )
    if any(entry.kid == new.kid for entry in entries):
        raise RotationRefusedError(f"key {new.kid} is already in the ring")
    return (*entries, replace(new, state=KeyState.NEXT, retiring_since=None))


def install_active(entries: Sequence[RingEntry], new: RingEntry, now: datetime) -> Entries:
    """A new key that signs at once (the first key, or an emergency replacement)."""
    if any(entry.kid == new.kid for entry in entries):
        raise RotationRefusedError(f"key {new.kid} is already in the ring")
    return promote((*entries, replace(new, state=KeyState.NEXT)), new.kid, now)


def promote(entries: Sequence[RingEntry], kid: str, now: datetime) -> Entries:
    """`kid` signs from now on; the previous active key becomes retiring as of `now`."""
    target = find(entries, kid)
    if target.state is KeyState.ACTIVE:
        raise already_active(target.kid)
    if target.not_after <= now:
        raise RotationRefusedError(
            f"the certificate of key {target.kid} expired at {target.not_after:%Y-%m-%d %H:%M}Z: "
            "registries reject tokens carrying it; add a fresh key (`registry-auth keys add`) "
            "and promote that"
        )
    if target.not_before > now:
        raise RotationRefusedError(
            f"the certificate of key {target.kid} is not valid before "
            f"{target.not_before:%Y-%m-%d %H:%M:%S}Z (was it made on a host whose clock ran "
            "ahead?): registries reject tokens carrying it until then; add a fresh key "
            "(`registry-auth keys add`) and promote that"
        )
    result: list[RingEntry] = []
    for entry in entries:
        if entry.kid == target.kid:
            result.append(replace(entry, state=KeyState.ACTIVE, retiring_since=None))
        elif entry.state is KeyState.ACTIVE:
            result.append(replace(entry, state=KeyState.RETIRING, retiring_since=now))
        else:
            result.append(entry)
    return tuple(result)


def already_active(kid: str) -> RotationRefusedError:
    """Why promoting the active key is refused."""
    return RotationRefusedError(f"key {kid} is already the active key; nothing to do")


def retiring_active(kid: str) -> RotationRefusedError:
    """Why retiring the active key is refused."""
    return RotationRefusedError(
        f"key {kid} is the active key: it signs every token. Add and promote another key first "
        "(`registry-auth keys add`, ship bundle.pem, `registry-auth keys promote NEW`)"
    )


class TokenWindow(NamedTuple):
    """How long after `keys promote` a token signed by the old key may still be accepted:
    instances go on signing with it until they have loaded the new ring (`propagation`: seconds
    for it to reach them, kubelet's refresh of a mounted Secret, say; `reload`: seconds for
    each process to see it there, its `reload_interval` and the second a changed file settles),
    each token lives `token_ttl`, and the registry adds its leeway."""

    token_ttl: int
    propagation: int = 0
    reload: int = 0

    @classmethod
    def of(cls, settings: Settings) -> TokenWindow:
        """The window the service's config sets: `token_ttl`, `key_propagation` and
        `reload_interval`."""
        # Here, not at the top: `keys sync` loads this module and no settings (pydantic).
        from app.reload import SETTLE_SECONDS  # noqa: PLC0415

        reload = math.ceil(settings.reload_interval + SETTLE_SECONDS)
        return cls(settings.token_ttl, settings.key_propagation, reload)

    def end(self, since: datetime) -> datetime:
        seconds = self.token_ttl + self.propagation + self.reload
        return since + timedelta(seconds=seconds) + REGISTRY_LEEWAY

    def explain(self) -> str:
        propagation = f" + key_propagation ({self.propagation} s)" if self.propagation else ""
        reload = f" + reload_interval and a second ({self.reload} s)" if self.reload else ""
        leeway = " + the registry's 60 s leeway"
        return f"token_ttl ({self.token_ttl} s){propagation}{reload}{leeway}"


def retire_after(entry: RingEntry, window: TokenWindow) -> datetime | None:
    """When the last token signed by a retiring key is past the registry's leeway."""
    if entry.retiring_since is None:
        return None
    return window.end(entry.retiring_since)


def retire(
    entries: Sequence[RingEntry],
    kid: str,
    now: datetime,
    *,
    window: TokenWindow,
    force: bool = False,
) -> Entries:
    """Drop `kid` from the ring: refused for the active key, and for a retiring key whose
    tokens may still be valid at a registry (unless `force`: those tokens then fail)."""
    target = find(entries, kid)
    if target.state is KeyState.ACTIVE:
        raise retiring_active(target.kid)
    if target.state is KeyState.RETIRING and not force:
        _check_tokens_expired(target, now, window)
    return tuple(entry for entry in entries if entry.kid != target.kid)


def _check_tokens_expired(entry: RingEntry, now: datetime, window: TokenWindow) -> None:
    safe_at = retire_after(entry, window)
    if safe_at is None:
        raise RotationRefusedError(
            f"key {entry.kid} is retiring but the ring does not record since when, so tokens it "
            f"signed may still be valid. Wait {window.explain()} after its promotion, then "
            "retire it with --force"
        )
    if now < safe_at:
        wait = int((safe_at - now).total_seconds()) + 1
        raise RotationRefusedError(
            f"key {entry.kid} has been retiring since {entry.retiring_since:%Y-%m-%d %H:%M:%S}Z: "
            f"tokens it signed may be valid for {window.explain()}, until "
            f"{safe_at:%Y-%m-%d %H:%M:%S}Z. "
            f"Wait {wait} s and run this again, or pass --force to cut them off now (clients "
            "holding them get 401 once registries load the new bundle)"
        )


def published(entries: Sequence[RingEntry]) -> Entries:
    """Keys whose certificates belong in bundle.pem: all of them (next, active, retiring)."""
    return tuple(entries)


def entry_record(entry: RingEntry) -> dict[str, str]:
    """The keyring.json record of an entry (its certificate lives in <id>.crt)."""
    record = {
        "id": entry.id,
        "kid": entry.kid,
        "algorithm": entry.algorithm.value,
        "state": entry.state.value,
        "created": entry.created.isoformat(),
    }
    if entry.retiring_since is not None:
        record["retiring_since"] = entry.retiring_since.isoformat()
    return record


def check_record(record: dict[str, Any]) -> None:
    """ValueError/KeyError/TypeError when a keyring.json record is not one this code wrote."""
    KeyState(record["state"])
    Algorithm(record["algorithm"])
    _aware(record["created"])
    if record.get("retiring_since"):
        _aware(record["retiring_since"])
    if not isinstance(record["kid"], str) or not FILE_ID.fullmatch(record["id"]):
        # The id names the key files: never let a damaged ring point outside keys_dir.
        raise ValueError("bad id or kid")


def _aware(text: str) -> datetime:
    """A time as this code writes it: with its UTC offset (one without cannot be compared)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text!r}")
    return moment


def entry_from_record(record: dict[str, Any], certificate: x509.Certificate) -> RingEntry:
    since = record.get("retiring_since")
    return RingEntry(
        id=record["id"],
        kid=record["kid"],
        algorithm=Algorithm(record["algorithm"]),
        state=KeyState(record["state"]),
        created=datetime.fromisoformat(record["created"]),
        certificate=certificate,
        retiring_since=datetime.fromisoformat(since) if since else None,
    )
