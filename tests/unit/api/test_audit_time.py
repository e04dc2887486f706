"""The audit line's time: the same text datetime writes, for any clock value."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.api.audit import utc_millis


def _datetime_text(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_any_time_reads_as_datetime_writes_it(now: float) -> None:
    assert utc_millis(now) == _datetime_text(now)


def test_rounding_at_the_edges_of_a_second() -> None:
    # Microseconds round half-even before the cut to milliseconds: .9999995 is the next second.
    for now in (1764000000.9999995, 1764000000.999999, 1764000000.0004995, 1764000000.5):
        assert utc_millis(now) == _datetime_text(now)
    assert utc_millis(1764000000.9999996) == "2025-11-24T16:00:01.000+00:00"


def test_consecutive_seconds_do_not_share_a_prefix() -> None:
    assert utc_millis(1764000000.25) == "2025-11-24T16:00:00.250+00:00"
    assert utc_millis(1764000001.25) == "2025-11-24T16:00:01.250+00:00"
    assert utc_millis(1764000000.75) == "2025-11-24T16:00:00.750+00:00"
