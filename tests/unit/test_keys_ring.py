"""Pure key ring transitions with a fixed clock: every state change and every refusal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from app.errors import RotationRefusedError
from app.keys import ring
from app.keys.certs import self_signed
from app.keys.model import Algorithm, KeyState
from app.keys.ring import RingEntry

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TTL = 300
WINDOW = ring.TokenWindow(TTL)
_KEY = ec.generate_private_key(ec.SECP256R1())
VALID = self_signed(_KEY, NOW - timedelta(days=1), 365)
EXPIRED = self_signed(_KEY, NOW - timedelta(days=400), 365)
NOT_YET = self_signed(_KEY, NOW + timedelta(days=1), 365)  # made on a host whose clock ran ahead


def entry(
    kid: str,
    state: KeyState,
    *,
    certificate: x509.Certificate = VALID,
    retiring_since: datetime | None = None,
) -> RingEntry:
    return RingEntry(
        kid.lower(), kid, Algorithm.ES256, state, NOW, certificate, retiring_since=retiring_since
    )


def states(entries: tuple[RingEntry, ...]) -> dict[str, str]:
    return {e.kid: e.state.value for e in entries}


ACTIVE = entry("AAAA", KeyState.ACTIVE)
NEXT = entry("BBBB", KeyState.NEXT)


def test_add_appends_a_next_key() -> None:
    after = ring.add((ACTIVE,), replace(NEXT, state=KeyState.ACTIVE))
    assert states(after) == {"AAAA": "active", "BBBB": "next"}


def test_add_refuses_a_second_next_key() -> None:
    with pytest.raises(RotationRefusedError, match=r"BBBB is already next: promote it"):
        ring.add((ACTIVE, NEXT), entry("CCCC", KeyState.NEXT))


def test_add_refuses_a_kid_already_in_the_ring() -> None:
    with pytest.raises(RotationRefusedError, match="already in the ring"):
        ring.add((ACTIVE,), entry("AAAA", KeyState.NEXT))


def test_promote_makes_next_active_and_records_when_the_old_one_started_retiring() -> None:
    after = ring.promote((ACTIVE, NEXT), "BBBB", NOW)
    assert states(after) == {"AAAA": "retiring", "BBBB": "active"}
    old = ring.find(after, "AAAA")
    assert old.retiring_since == NOW
    assert ring.retire_after(old, WINDOW) == NOW + timedelta(seconds=TTL + 60)


def test_promote_accepts_a_unique_kid_prefix() -> None:
    after = ring.promote((ACTIVE, NEXT), "BB", NOW)
    assert ring.find(after, "BBBB").state is KeyState.ACTIVE
    # As the key files are named (lower case): the same key.
    assert ring.find(after, "bb").kid == "BBBB"


def test_promote_back_a_retiring_key_rolls_back() -> None:
    rotated = ring.promote((ACTIVE, NEXT), "BBBB", NOW)
    back = ring.promote(rotated, "AAAA", NOW + timedelta(seconds=5))
    assert states(back) == {"AAAA": "active", "BBBB": "retiring"}
    assert ring.find(back, "AAAA").retiring_since is None


@pytest.mark.parametrize(
    ("entries", "kid", "message"),
    [
        ((ACTIVE, NEXT), "AAAA", "already the active key"),
        ((ACTIVE, NEXT), "ZZZZ", r"no key 'ZZZZ' in the ring \(keys: AAAA, BBBB\)"),
        ((ACTIVE, entry("BBB1", KeyState.NEXT), entry("BBB2", KeyState.RETIRING)), "BBB", "2 keys"),
        (
            (ACTIVE, entry("BBBB", KeyState.NEXT, certificate=EXPIRED)),
            "BBBB",
            r"expired at .*add a fresh key",
        ),
        (
            (ACTIVE, entry("BBBB", KeyState.NEXT, certificate=NOT_YET)),
            "BBBB",
            r"not valid before 2026-03-02 11:55:00Z .*add a fresh key",
        ),
    ],
    ids=[
        "already-active",
        "unknown-kid",
        "ambiguous-prefix",
        "expired-certificate",
        "certificate-not-valid-yet",
    ],
)
def test_promote_refusals(entries: tuple[RingEntry, ...], kid: str, message: str) -> None:
    with pytest.raises(RotationRefusedError, match=message):
        ring.promote(entries, kid, NOW)


def test_install_active_demotes_the_old_active_key() -> None:
    after = ring.install_active((ACTIVE,), entry("CCCC", KeyState.NEXT), NOW)
    assert states(after) == {"AAAA": "retiring", "CCCC": "active"}


def test_retire_a_next_key_needs_no_wait() -> None:
    assert states(ring.retire((ACTIVE, NEXT), "BBBB", NOW, window=WINDOW)) == {"AAAA": "active"}


def test_retire_refuses_the_active_key() -> None:
    with pytest.raises(RotationRefusedError, match=r"is the active key: .* promote another key"):
        ring.retire((ACTIVE, NEXT), "AAAA", NOW, window=WINDOW, force=True)


def _rotated() -> tuple[RingEntry, ...]:
    return ring.promote((ACTIVE, NEXT), "BBBB", NOW)


@pytest.mark.parametrize("elapsed", [0, 1, TTL, TTL + 59])
def test_retire_refuses_while_tokens_may_be_valid(elapsed: int) -> None:
    later = NOW + timedelta(seconds=elapsed)
    wait = TTL + 60 - elapsed + 1
    with pytest.raises(
        RotationRefusedError, match=rf"until 2026-03-01 12:06:00Z\. Wait {wait} s .* --force"
    ):
        ring.retire(_rotated(), "AAAA", later, window=WINDOW)


@pytest.mark.parametrize("elapsed", [TTL + 60, TTL + 3600])
def test_retire_allowed_after_ttl_plus_leeway(elapsed: int) -> None:
    after = ring.retire(_rotated(), "AAAA", NOW + timedelta(seconds=elapsed), window=WINDOW)
    assert states(after) == {"BBBB": "active"}


@pytest.mark.parametrize(
    ("elapsed", "allowed"), [(TTL + 60, False), (TTL + 179, False), (TTL + 180, True)]
)
def test_retire_waits_for_the_ring_to_reach_every_instance(elapsed: int, allowed: bool) -> None:
    # Kubernetes: pods go on signing with the old key until kubelet refreshes their Secret.
    window = ring.TokenWindow(TTL, propagation=120)
    later = NOW + timedelta(seconds=elapsed)
    if allowed:
        assert states(ring.retire(_rotated(), "AAAA", later, window=window)) == {"BBBB": "active"}
        return
    with pytest.raises(RotationRefusedError) as refused:
        ring.retire(_rotated(), "AAAA", later, window=window)
    assert "token_ttl (300 s) + key_propagation (120 s) + the registry's 60 s leeway" in str(
        refused.value
    )
    assert "until 2026-03-01 12:08:00Z" in str(refused.value)


def test_retire_with_force_cuts_tokens_off_early() -> None:
    after = ring.retire(_rotated(), "AAAA", NOW, window=WINDOW, force=True)
    assert states(after) == {"BBBB": "active"}


def test_retire_refuses_a_retiring_key_without_a_recorded_time() -> None:
    legacy = (entry("AAAA", KeyState.RETIRING), entry("BBBB", KeyState.ACTIVE))
    with pytest.raises(RotationRefusedError, match="does not record since when"):
        ring.retire(legacy, "AAAA", NOW + timedelta(days=30), window=WINDOW)
    assert states(ring.retire(legacy, "AAAA", NOW, window=WINDOW, force=True)) == {"BBBB": "active"}


def test_published_holds_every_state() -> None:
    rotated = ring.add(_rotated(), entry("CCCC", KeyState.NEXT))
    assert [e.kid for e in ring.published(rotated)] == ["AAAA", "BBBB", "CCCC"]


def test_record_round_trip_keeps_retiring_since() -> None:
    old = ring.find(_rotated(), "AAAA")
    record = ring.entry_record(old)
    ring.check_record(record)
    assert ring.entry_from_record(record, VALID) == old


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "A/B", "", "x" * 65])
def test_record_with_an_id_outside_keys_dir_is_rejected(bad_id: str) -> None:
    record = ring.entry_record(ACTIVE) | {"id": bad_id}
    with pytest.raises(ValueError, match="bad id"):
        ring.check_record(record)
