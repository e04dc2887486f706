"""The README's Metrics table lists exactly the metrics GET /metrics can export: an alert
written from the table (deploy/prometheus) then never waits on a metric that does not exist."""

from __future__ import annotations

import re
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
