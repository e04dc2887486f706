"""Robot accounts about to expire are said ahead (log at start, /readyz, a metric), so a CI job's
robot does not lapse unnoticed; their names only in the log (anyone may ask /readyz)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.api.app import create_app
from app.authn.robot_store import create_robot
from app.service import TokenService
from app.settings import Settings, load_settings
from tests.conftest import api_client

pytestmark = pytest.mark.anyio
DAY = timedelta(days=1)


def _settings(tmp_path: Path, keys_dir: Path) -> Settings:
    robots = tmp_path / "robots.yaml"
    now = datetime.now(UTC)
    create_robot(robots, "nightly", ["ci"], now + 3 * DAY)
    create_robot(robots, "deploy", ["ci"], now + 10 * DAY)
    create_robot(robots, "release", [], now + 100 * DAY)
    create_robot(robots, "forever", [], None)
    create_robot(robots, "old", [], now - DAY, clock=lambda: time.time() - 30 * 86400)
    return load_settings(
        overrides={
            "keys_dir": str(keys_dir),
            "htpasswd": None,
            "auth_backends": [{"type": "robots", "path": str(robots)}],
            "service": "registry.test",
            "realm": "https://auth.test/token",
            "state": {"backend": "none"},
        }
    )


async def test_robots_expiring_soon_are_said_ahead(
    tmp_path: Path, rsa_keys_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, rsa_keys_dir)
    with caplog.at_level(logging.WARNING):
        service = TokenService.from_settings(settings)
    logged = [r.getMessage() for r in caplog.records if "robot account" in r.getMessage()]
    assert [line.split()[2] for line in logged] == ["robot$nightly", "robot$deploy"]
    async with api_client(create_app(settings, service)) as client:
        ready = (await client.get("/readyz")).json()
        (warning,) = ready["warnings"]
        assert warning.startswith("2 robot account(s) expire within 14 days, the first at ")
        assert "robot$" not in warning  # anyone may ask /readyz
        assert ready["status"] == "ready"
        metrics = (await client.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("registry_auth_robot_next_expiry"))
    seconds = float(line.split()[-1])
    assert 3 * 86400 - 120 < seconds <= 3 * 86400  # nightly's, not the expired one's
    # The expired one is refused, and counted until revoked: an alert on the countdown alone
    # would clear the moment a robot expires.
    assert "registry_auth_robots_expired 1.0" in metrics


async def test_no_warning_when_none_expires_soon(tmp_path: Path, rsa_keys_dir: Path) -> None:
    settings = _settings(tmp_path, rsa_keys_dir).model_copy(update={"robot_warning_days": 2})
    async with api_client(create_app(settings)) as client:
        assert "warnings" not in (await client.get("/readyz")).json()
