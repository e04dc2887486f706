"""Prometheus metrics of the service: one set per process, created on first use.

prometheus-client picks its storage (in memory, or files shared by several worker processes)
when it is first imported, from PROMETHEUS_MULTIPROC_DIR. So it is imported here lazily, on the
first call of `metrics()`: the server sets that variable before (app.api.metrics_setup), and
modules that count things can import this one at any time.

Counts made on an event loop go through `count` and `observe`, which add them up in memory and
hand them to prometheus-client once per turn of the loop (`LoopTally`).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

PREFIX = "registry_auth_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    latency: Histogram
    password_checks: Counter
    cache_hits: Counter
    refresh_grants: Counter
    refresh_tokens_not_issued: Counter
    throttles: Counter
    audit_lines_dropped: Counter
    stuck_workers: Counter


@functools.cache
def metrics() -> Metrics:
    from prometheus_client import (  # noqa: PLC0415 - see the module docstring
        Counter,
        Histogram,
        disable_created_metrics,
    )

    # `*_created` series exist only in single-process mode: without them both modes export
    # the same families.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
    made = Metrics(
        requests=Counter(
            f"{PREFIX}requests", "HTTP requests by endpoint and outcome", ["endpoint", "outcome"]
        ),
        latency=Histogram(
            f"{PREFIX}request_duration_seconds",
            "Time to answer a request, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
        ),
        password_checks=Counter(
            f"{PREFIX}password_checks", "Credential checks by result", ["result"]
        ),
        cache_hits=Counter(
            f"{PREFIX}password_cache_hits", "Credential checks answered by the result cache"
        ),
        refresh_grants=Counter(
            f"{PREFIX}refresh_grants", "OAuth2 refresh-token grants by result", ["result"]
        ),
        refresh_tokens_not_issued=Counter(
            f"{PREFIX}refresh_tokens_not_issued",
            "Logins that asked for a refresh token and got none: the store was unavailable",
        ),
        throttles=Counter(
            f"{PREFIX}bruteforce_throttles",
            "Login attempts slowed down (delayed) or refused (blocked)",
            ["action"],
        ),
        audit_lines_dropped=Counter(
            f"{PREFIX}audit_lines_dropped",
            "Audit lines not written: the disk was full or failing, or stdout's reader fell behind",
        ),
        stuck_workers=Counter(
            f"{PREFIX}stuck_workers",
            "Workers killed and replaced because their event loop had stopped (worker_timeout)",
        ),
    )
    # Each known label value exported as 0 from the start: a series that appears only at its
    # first increment makes `rate()` and `increase()` miss that increment, and an alert on it
    # cannot tell "none yet" from "not scraped".
    for counter, values in (
        (made.password_checks, ("accepted", "rejected")),
        (made.refresh_grants, ("granted", "refused")),
        (made.throttles, ("delayed", "blocked")),
    ):
        for value in values:
            counter.labels(value)
    return made


class LoopTally:
    """Counts added up in memory and written to prometheus-client at the end of the event
    loop's turn.

    With several worker processes, prometheus-client keeps every value in a memory-mapped file;
    each increment takes a lock, asks the kernel for the process id and packs the value into the
    file: ~9,000 instructions. A fresh token made five of them (request counter, latency sum
    and bucket, credential check, cache hit), as much CPU as all the rest of its bookkeeping
    (docs/performance.md). Here an increment adds to a dict entry, and the first one of a turn
    schedules `flush` with `call_soon`: it runs as soon as the loop has run what is ready now,
    so under load one write covers every token of the turn, and when idle a count is written
    within the same turn (nothing is stale for a scrape).

    The pending counts belong to one loop at a time (a process serves from one) and are only
    touched from its thread, so no lock is taken. Calls from a thread without a running loop
    (worker threads), or from a second loop while the first one's flush is pending, write
    through at once. `flush` runs on the owning loop: scheduled, before a scrape (an async
    handler) and at shutdown; counts left by a loop closed with a flush still pending are
    written by the next loop that counts, or by the next `flush`.

    A histogram's turn is written as `observe` writes one value: its `_sum`, then one
    `_buckets` entry per bucket hit. Those are prometheus-client's own attributes, not its API
    (it has no way to observe many values at once); tests/unit/test_metrics_tally.py checks
    that the exposition equals direct `observe` calls, so an upgrade that changes them fails
    there.
    """

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}  # prometheus value child -> amount
        self._observed: dict[Any, list[float]] = {}  # histogram child -> [sum, bucket hits...]
        self._loop: asyncio.AbstractEventLoop | None = None  # owns the pending counts

    def count(self, counter: Any, amount: float = 1.0) -> None:
        """`counter.inc(amount)` (a labelled Counter child, or one without labels)."""
        loop = _get_running_loop()
        if loop is None or (loop is not self._loop and not self._own(loop)):
            counter.inc(amount)
            return
        counts = self._counts
        counts[counter] = counts.get(counter, 0.0) + amount

    def observe(self, histogram: Any, amount: float) -> None:
        """`histogram.observe(amount)` (a labelled Histogram child, or one without labels)."""
        loop = _get_running_loop()
        if loop is None or (loop is not self._loop and not self._own(loop)):
            histogram.observe(amount)
            return
        tally = self._observed.get(histogram)
        if tally is None:
            tally = self._observed[histogram] = [0.0] * (len(histogram._upper_bounds) + 1)
        tally[0] += amount
        # prometheus-client's bucket: the first upper bound >= amount (the last one is +Inf).
        tally[bisect.bisect_left(histogram._upper_bounds, amount) + 1] += 1

    def _own(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Make the running `loop` the owner if it can be; False: write through instead."""
        if self._loop is not None:
            if not self._loop.is_closed():
                return False  # another live loop's flush is pending
            self.flush()  # left by a loop that closed before its flush ran
        self._loop = loop
        loop.call_soon(self.flush)
        return True

    def flush(self) -> None:
        """Write every pending count to prometheus-client. Called off the owning loop while that
        loop still runs, it leaves the counts to the loop's own flush (only its thread touches
        them)."""
        owner = self._loop
        if owner is not None and owner is not _get_running_loop() and not owner.is_closed():
            return
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        self._loop = None
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, tally in observed.items():
            # What `observe` does per value, once per turn: the sum, then the buckets hit.
            histogram._sum.inc(tally[0])
            for bucket, hits in enumerate(tally[1:]):
                if hits:
                    histogram._buckets[bucket].inc(hits)


_get_running_loop = asyncio._get_running_loop  # None outside a loop, where get_ raises

TALLY = LoopTally()
count = TALLY.count
observe = TALLY.observe
flush = TALLY.flush
