"""LoopTally: counts made on an event loop reach prometheus-client once per turn of the loop,
exactly as direct `inc`/`observe` calls would have written them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from app.metrics import LATENCY_BUCKETS, LoopTally


class Recorder:
    """Stands in for a prometheus value child: the `inc` calls it received."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def inc(self, amount: float) -> None:
        self.calls.append(amount)


def in_another_thread(work: Callable[[], object]) -> None:
    """Run `work` in a new thread and wait for it: the calling loop is blocked meanwhile, so a
    flush it scheduled cannot run."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def _samples(registry: CollectorRegistry, label: str) -> dict[tuple[str, str], float]:
    """(sample name, le) -> value, for the series labelled `label` (not their creation time)."""
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("way") == label and not sample.name.endswith("_created"):
                found[(sample.name, sample.labels.get("le", ""))] = sample.value
    return found


latencies = st.lists(
    st.one_of(
        st.sampled_from([0.0, *LATENCY_BUCKETS, 10.5]),  # on a bound, and past the last one
        st.floats(min_value=0, max_value=20, allow_nan=False),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(latencies, st.integers(min_value=0, max_value=30))
def test_a_turn_writes_what_direct_calls_write(observed: list[float], requests: int) -> None:
    registry = CollectorRegistry()
    counter = Counter("t_requests", "requests", ["way"], registry=registry)
    latency = Histogram(
        "t_latency_seconds", "latency", ["way"], buckets=LATENCY_BUCKETS, registry=registry
    )
    tally = LoopTally()

    async def turn() -> None:
        for _ in range(requests):
            counter.labels("direct").inc()
            tally.count(counter.labels("tally"))
        for amount in observed:
            latency.labels("direct").observe(amount)
            tally.observe(latency.labels("tally"), amount)
        assert set(_samples(registry, "tally").values()) <= {0.0}  # nothing written yet
        await asyncio.sleep(0)  # the turn ends: the tally's flush runs

    asyncio.run(turn())
    direct, tallied = _samples(registry, "direct"), _samples(registry, "tally")
    assert tallied == direct


def test_counts_of_one_turn_are_one_write_when_the_turn_ends() -> None:
    tally, requests, other = LoopTally(), Recorder(), Recorder()

    async def turn() -> None:
        for _ in range(5):
            tally.count(requests)
        tally.count(other, 2.5)
        assert requests.calls == []  # not yet: the turn goes on
        await asyncio.sleep(0)
        assert requests.calls == [5.0]
        assert other.calls == [2.5]
        tally.count(requests)  # the next turn starts its own tally
        await asyncio.sleep(0)
        assert requests.calls == [5.0, 1.0]

    asyncio.run(turn())


def test_a_thread_without_a_loop_writes_at_once() -> None:
    tally, checks = LoopTally(), Recorder()
    tally.count(checks)
    assert checks.calls == [1.0]
    registry = CollectorRegistry()
    latency = Histogram("t_latency_seconds", "latency", ["way"], registry=registry)
    tally.observe(latency.labels("tally"), 0.2)
    assert _samples(registry, "tally")[("t_latency_seconds_count", "")] == 1.0


def _count_on_its_own_loop(tally: LoopTally, counter: Recorder) -> None:
    async def count() -> None:
        tally.count(counter)

    asyncio.run(count())


def _flush(tally: LoopTally, _: Recorder) -> None:
    tally.flush()  # no loop in that thread: it does not own the pending counts


@pytest.mark.parametrize(
    ("elsewhere", "written_there"),
    [(_count_on_its_own_loop, [1.0]), (_flush, [])],
    ids=["a second loop writes through", "a flush leaves them"],
)
def test_another_thread_never_touches_a_live_loops_pending_counts(
    elsewhere: Callable[[LoopTally, Recorder], None], written_there: list[float]
) -> None:
    tally, first, second = LoopTally(), Recorder(), Recorder()

    async def turn() -> None:
        tally.count(first)
        in_another_thread(lambda: elsewhere(tally, second))
        assert second.calls == written_there
        assert first.calls == []
        await asyncio.sleep(0)
        assert first.calls == [1.0]

    asyncio.run(turn())


def test_counts_left_by_a_loop_closed_before_its_flush_are_written_by_the_next() -> None:
    tally, checks = LoopTally(), Recorder()
    loop = asyncio.new_event_loop()

    async def count_and_stop() -> None:
        tally.count(checks)
        loop.stop()  # the loop ends with this turn: the flush scheduled for the next never runs

    task = loop.create_task(count_and_stop())
    loop.run_forever()
    loop.close()
    assert task.done()
    assert checks.calls == []

    async def count_again() -> None:
        tally.count(checks, 2)
        assert checks.calls == [1.0]  # the closed loop's count, written at once
        await asyncio.sleep(0)

    asyncio.run(count_again())
    assert checks.calls == [1.0, 2.0]


def test_flush_writes_pending_counts_now() -> None:
    tally, checks = LoopTally(), Recorder()

    async def scrape() -> None:
        tally.count(checks)
        tally.flush()  # what /metrics does before rendering
        assert checks.calls == [1.0]
        await asyncio.sleep(0)  # the scheduled flush then finds nothing
        assert checks.calls == [1.0]

    asyncio.run(scrape())
