"""GET /metrics: the Prometheus text format, correct with one process or several workers.

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its counters to files there and a scrape
aggregates them all (prometheus-client's multiprocess mode); `use_multiprocess_dir` sets it for
the server before prometheus-client is first imported. Values that are a fact about now (the
certificate's remaining lifetime, etcd publishing) are computed at scrape time by the process
that answers, so they never go stale in a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from app.api.scratch import private_directory

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class LiveValues:
    """Scrape-time facts: seconds until the signing (and TLS) certificate expires, etcd,
    which watched files failed their last reload, and when the first robot expires."""

    signing_not_after: tuple[str, float]  # (kid, POSIX time)
    tls_not_after: float | None
    etcd: dict[str, Any]
    reloads: tuple[tuple[str, bool], ...] = ()  # (watched state, its last reload failed)
    robot_next_expiry: float | None = None  # POSIX time the first valid robot expires
    robots_expired: int | None = None  # expired robots still in the files (None: no robots)


def use_multiprocess_dir() -> None:
    """Make this process and the workers it starts share counters through files.

    An operator's PROMETHEUS_MULTIPROC_DIR is kept (it must be emptied before each start, as
    prometheus-client requires); otherwise a private directory is made, removed at exit (or
    at the next start, after a SIGKILL: app.api.scratch).
    """
    if os.environ.get(MULTIPROC_ENV):
        return
    os.environ[MULTIPROC_ENV] = str(private_directory("metrics"))


def render_metrics(live: Callable[[], LiveValues]) -> bytes:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    from app.metrics import flush, metrics  # noqa: PLC0415 - the counters exist even before any use

    metrics()
    flush()  # this process's counts of the current loop turn
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    else:
        registry = REGISTRY
    scrape = CollectorRegistry()
    scrape.register(_LiveCollector(live))
    return generate_latest(registry) + generate_latest(scrape)


class _LiveCollector:
    def __init__(self, live: Callable[[], LiveValues]) -> None:
        self._live = live

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        values, now = self._live(), time.time()
        expiry = GaugeMetricFamily(
            "registry_auth_certificate_expiry_seconds",
            "Seconds until the active signing certificate expires (negative: expired)",
            labels=["kid"],
        )
        expiry.add_metric([values.signing_not_after[0]], values.signing_not_after[1] - now)
        yield expiry
        if values.tls_not_after is not None:
            yield GaugeMetricFamily(
                "registry_auth_tls_certificate_expiry_seconds",
                "Seconds until the served TLS certificate expires",
                value=values.tls_not_after - now,
            )
        yield from _etcd_families(values.etcd)
        failing = GaugeMetricFamily(
            "registry_auth_reload_failing",
            "1 while the last reload of these files failed (the previous state still serves)",
            labels=["files"],
        )
        for name, failed in values.reloads:
            failing.add_metric([name], 1.0 if failed else 0.0)
        yield failing
        if values.robot_next_expiry is not None:
            yield GaugeMetricFamily(
                "registry_auth_robot_next_expiry_seconds",
                "Seconds until the first robot account still valid expires",
                value=values.robot_next_expiry - now,
            )
        if values.robots_expired is not None:
            yield GaugeMetricFamily(
                "registry_auth_robots_expired",
                "Robot accounts past their expiry (refused) still in the robots files",
                value=float(values.robots_expired),
            )


def _etcd_families(etcd: dict[str, Any]) -> Iterator[Any]:
    """Only when publishing to etcd is configured: a 0 would fire an alert on "not published"."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    if not etcd.get("enabled"):
        return
    yield GaugeMetricFamily(
        "registry_auth_etcd_published",
        "1 when the last etcd check found or made the registry key right; 0 otherwise",
        value=1.0 if etcd.get("published") else 0.0,
    )
    yield GaugeMetricFamily(
        "registry_auth_etcd_publish_failures",
        "Consecutive failed etcd publish checks",
        value=float(etcd.get("failures", 0)),
    )
