"""The README's Metrics table lists exactly the metrics GET /metrics can export: an alert
written from the table (deploy/prometheus) then never waits on a metric that does not exist."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.api.metrics_http import LiveValues, render_metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def _exported() -> set[str]:
    """Every family, with everything that is optional present: TLS, etcd, robots."""
    later = time.time() + 86400
    live = LiveValues(
        signing_not_after=("KID", later),
        tls_not_after=later,
        etcd={"enabled": True, "published": True, "failures": 0},
        reloads=(("ACL", False),),
        robot_next_expiry=later,
        robots_expired=0,
    )
    text = render_metrics(lambda: live).decode()
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if family.name.startswith("registry_auth_")
    }


def test_the_readme_lists_every_metric_and_no_other() -> None:
    documented = set(re.findall(r"^\| `(registry_auth_\w+)` \|", README.read_text(), re.M))
    assert documented == _exported()


def test_counters_by_result_start_at_zero_for_each_known_value() -> None:
    """`registry_auth_refresh_grants_total` and the throttle counter were absent until their
    first increment, which `rate()` then missed. In a fresh process, before any request."""
    program = (
        "from app.api.metrics_http import LiveValues, render_metrics\n"
        "live = LiveValues(('K', 2e9), None, {'enabled': False})\n"
        "print(render_metrics(lambda: live).decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    for series in (
        'registry_auth_password_checks_total{result="accepted"} 0.0',
        'registry_auth_password_checks_total{result="rejected"} 0.0',
        'registry_auth_refresh_grants_total{result="granted"} 0.0',
        'registry_auth_refresh_grants_total{result="refused"} 0.0',
        'registry_auth_bruteforce_throttles_total{action="delayed"} 0.0',
        'registry_auth_bruteforce_throttles_total{action="blocked"} 0.0',
    ):
        assert series in done.stdout.splitlines(), done.stdout
