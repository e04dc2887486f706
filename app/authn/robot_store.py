"""Creating, listing and revoking robot accounts in their file (for `registry-auth robots`).

The secret is returned once to the caller and only its SHA-256 is written. Writes are atomic
(temporary file + rename), so the server's hot reload never reads half a file; mode 0600.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from app.atomic import editing, write_atomic
from app.authn.robots import Robot, format_time, load_robots, secret_digest
from app.backend_settings import ROBOT_PREFIX
from app.errors import UserStoreError

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DURATION = re.compile(r"(?P<count>[1-9][0-9]{0,5})(?P<unit>[dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits from the OS CSPRNG


def robot_name(name: str) -> str:
    """'ci' or 'robot$ci' -> 'robot$ci'; anything else is refused with the rule."""
    bare = name.removeprefix(ROBOT_PREFIX)
    if _NAME.fullmatch(bare) is None:
        raise UserStoreError(
            f"invalid robot name {name!r}: lower-case letters, digits, '.', '_', '-' (max 64)"
        )
    return ROBOT_PREFIX + bare


def parse_expiry(text: str, now: float) -> datetime | None:
    """'90d', '12h', '30m' from now, or 'never'."""
    if text == "never":
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise UserStoreError(f"--expires {text!r}: use e.g. 90d, 12h, 30m or never")
    delta = timedelta(**{_UNITS[match["unit"]]: int(match["count"])})
    return datetime.fromtimestamp(now, UTC) + delta


def create_robot(
    path: Path,
    name: str,
    groups: Sequence[str],
    expires: datetime | None,
    *,
    clock: Callable[[], float] = time.time,
    secret_source: Callable[[], str] = new_secret,
    deliver: Callable[[Robot, str], None] | None = None,
) -> tuple[Robot, str]:
    """Add a robot; returns it and its secret (shown once). An existing name is refused.
    `deliver` hands the secret over before the robot is saved: when it fails, nothing is (a
    robot whose secret nobody saw could only be revoked)."""
    full = robot_name(name)
    with editing(path, UserStoreError):
        robots = load_robots(path)
        if full in robots:
            raise UserStoreError(f"robot {full!r} exists: revoke it first to make a new secret")
        secret = secret_source()
        created = datetime.fromtimestamp(int(clock()), UTC)
        robot = Robot(full, secret_digest(secret), frozenset(groups), created, expires)
        if deliver is not None:
            # The file written as it is first: a place no file can be written (a read-only
            # or full disk) fails here, before a secret is shown for a robot never saved.
            _write(path, robots)
            deliver(robot, secret)
        _write(path, {**robots, full: robot})
    return robot, secret


def revoke_robot(path: Path, name: str) -> None:
    full = robot_name(name)
    with editing(path, UserStoreError):
        robots = load_robots(path)
        if full not in robots:
            raise UserStoreError(f"no robot {full!r} in {path}")
        del robots[full]
        _write(path, robots)


def list_robots(path: Path) -> list[Robot]:
    return sorted(load_robots(path).values(), key=lambda robot: robot.name)


def _document(robots: dict[str, Robot]) -> dict[str, Any]:
    return {
        "robots": {
            name: {
                "sha256": robot.sha256,
                "groups": sorted(robot.groups),
                "created": format_time(robot.created),
                "expires": format_time(robot.expires),
            }
            for name, robot in sorted(robots.items())
        }
    }


def _write(path: Path, robots: dict[str, Robot]) -> None:
    # No mkdir: a mistyped directory is an error (write_atomic names the path), not a new tree.
    header = "# Managed by `registry-auth robots`: SHA-256 of each secret, never the secret.\n"
    text = header + yaml.safe_dump(_document(robots), sort_keys=False)
    write_atomic(path, text.encode("utf-8"), mode=0o600)
