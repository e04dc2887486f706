"""Prometheus metrics of the service: one set per process, created on first use.

prometheus-client picks its storage (in memory, or files shared by several worker processes)
when it is first imported, from PROMETHEUS_MULTIPROC_DIR. So it is imported here lazily, on the
first call of `metrics()`: the server sets that variable before (app.api.metrics_setup), and
modules that count things can import this one at any time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    throttles: Counter


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
    return Metrics(
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
        throttles=Counter(
            f"{PREFIX}bruteforce_throttles",
            "Login attempts slowed down (delayed) or refused (blocked)",
            ["action"],
        ),
    )
