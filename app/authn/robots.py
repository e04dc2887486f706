"""Robot accounts: machine credentials for CI, named `robot$NAME`, with groups and an expiry.

The file (YAML, mode 0600, written by `registry-auth robots`) holds the SHA-256 of each secret,
never the secret. A fast hash is enough here, unlike for passwords: a secret is 256 random bits
from the OS CSPRNG, so there is nothing to guess, and the check stays cheap on the hot path.

    robots:
      robot$ci:
        sha256: 9f86d0...
        groups: [ci]
        created: "2026-01-01T00:00:00Z"
        expires: "2026-04-01T00:00:00Z"     # null: never
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from app.authn.base import AuthResult, Credentials, Outcome, check_groups
from app.backend_settings import ROBOT_PREFIX
from app.errors import UserStoreError
from app.yaml_strict import load_strict_yaml, yaml_kind, yaml_problem

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Robot:
    name: str
    sha256: str = field(repr=False)
    groups: frozenset[str] = frozenset()
    created: datetime | None = None
    expires: datetime | None = None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires.timestamp()


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def format_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ENTRY_KEYS = ("sha256", "groups", "created", "expires")
_KNOWN = ", ".join(f"`{key}`" for key in _ENTRY_KEYS)
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_robots(data: Any, path: Path) -> dict[str, Robot]:
    """name -> robot; any problem is a UserStoreError naming the file, the robot and the key.
    An empty file, `robots:` and `robots: {}` are no robots yet; anything else that is not the
    format is refused (a list, a misspelled key read as no robots revoked every robot at the
    next reload, and `robots create` rewrote the file without the robots it had)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserStoreError(f"{path}: must be a mapping with one key, `robots` (it is {_a(data)})")
    unknown = sorted(str(key) for key in data if key != "robots")
    if unknown:
        raise UserStoreError(f"{path}: unknown key {', '.join(unknown)} (known: `robots`)")
    entries = data.get("robots")
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise UserStoreError(
            f"{path}: robots: must map robot names to entries (it is {_a(entries)})"
        )
    return {str(name): _parse_robot(str(name), entry, path) for name, entry in entries.items()}


def _parse_robot(name: str, entry: Any, path: Path) -> Robot:
    where = f"{path}: robots.{name}"
    if not name.startswith(ROBOT_PREFIX):
        raise UserStoreError(f"{where}: robot names start with {ROBOT_PREFIX!r}")
    if not isinstance(entry, dict):
        raise UserStoreError(f"{where}: must be a mapping of {_KNOWN} (it is {_a(entry)})")
    unknown = sorted(str(key) for key in entry if key not in _ENTRY_KEYS)
    if unknown:
        raise UserStoreError(f"{where}: unknown key {', '.join(unknown)} (known: {_KNOWN})")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
        raise UserStoreError(f"{where}: sha256: must be 64 hex digits")
    groups = entry.get("groups")
    return Robot(
        name,
        digest.lower(),
        frozenset() if groups is None else check_groups(groups, f"{where}: groups"),
        _parse_time(entry.get("created"), f"{where}: created"),
        _parse_time(entry.get("expires"), f"{where}: expires"),
    )


def _parse_time(value: Any, where: str) -> datetime | None:
    """None (never, or not known), a YAML timestamp or date, or RFC 3339 text."""
    if value is None:
        return None
    if isinstance(value, datetime):  # YAML may have parsed the timestamp already
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):  # `expires: 2027-01-01`: midnight UTC, as before
        value = value.isoformat()
    if not isinstance(value, str):  # a number or a boolean is no time
        raise UserStoreError(f"{where}: not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserStoreError(f"{where}: not an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _a(value: Any) -> str:
    """What a YAML value is, for an error message: `a list`, `a string`, `empty`."""
    return "empty" if value is None else yaml_kind(value)


def load_robots(path: Path) -> dict[str, Robot]:
    """A missing file is no robots yet (the first `robots create` makes it)."""
    if not path.exists():
        return {}
    try:
        data = load_strict_yaml(path.read_text(encoding="utf-8"))  # a robot twice is refused
    except OSError as exc:
        raise UserStoreError(f"cannot read robots file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserStoreError(f"robots file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise UserStoreError(f"robots file {path} is not valid YAML{yaml_problem(exc)}") from None
    return parse_robots(data, path)


class RobotAuthenticator:
    """Checks a robot's secret against the current robots file; expired robots are refused."""

    def __init__(self, robots: Callable[[], dict[str, Robot]], clock: Clock = time.time) -> None:
        self._robots = robots
        self._clock = clock

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        robot = self._robots().get(credentials.account)
        if robot is None:
            return AuthResult(Outcome.NOT_MINE)
        given = secret_digest(credentials.password.get_secret_value())
        if not hmac.compare_digest(given, robot.sha256):
            return AuthResult(Outcome.REJECTED)
        if robot.expired(self._clock()):
            log.info("robot %s expired at %s", robot.name, format_time(robot.expires))
            return AuthResult(Outcome.EXPIRED)
        return AuthResult(Outcome.ACCEPTED, robot.name, robot.groups)


class RobotExpiry:
    """Robots whose expiry comes within `warning_days`, from the robots files as loaded now:
    a CI job's robot that expires unnoticed is a failed pipeline on day 90."""

    def __init__(
        self,
        sources: Sequence[Callable[[], dict[str, Robot]]],
        warning_days: int,
        clock: Clock = time.time,
    ) -> None:
        self._sources = tuple(sources)
        self._window = warning_days * 86400
        self._clock = clock

    def _future(self, now: float) -> list[Robot]:
        return [
            robot
            for source in self._sources
            for robot in source().values()
            if robot.expires is not None and robot.expires.timestamp() > now
        ]

    def expiring(self) -> list[Robot]:
        """Not expired yet, but within the warning window; soonest first."""
        now = self._clock()
        soon = [r for r in self._future(now) if _expires_at(r) <= now + self._window]
        return sorted(soon, key=_expires_at)

    def expired(self) -> int:
        """Robots in the files whose expiry has passed (refused since): a job may still use
        one; `robots revoke` the ones nobody needs."""
        now = self._clock()
        return sum(robot.expired(now) for source in self._sources for robot in source().values())

    def next_expiry(self) -> float | None:
        """When the first robot still valid expires (POSIX time); None when none ever does."""
        return min((_expires_at(r) for r in self._future(self._clock())), default=None)

    def warning(self) -> str | None:
        """For /readyz, which anyone may ask: how many and when, no names (the log has them)."""
        soon = self.expiring()
        if not soon:
            return None
        return (
            f"{len(soon)} robot account(s) expire within {self._window // 86400} days, the first "
            f"at {format_time(soon[0].expires)}: `registry-auth robots list`, then create new "
            "ones for the jobs that use them"
        )

    def log(self) -> None:
        for robot in self.expiring():
            log.warning(
                "robot account %s expires at %s: create a new one for the jobs that use it",
                robot.name,
                format_time(robot.expires),
            )


def _expires_at(robot: Robot) -> float:
    return robot.expires.timestamp() if robot.expires is not None else float("inf")
