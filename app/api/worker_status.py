"""What each worker's /readyz says, shared, so that the answer of whichever worker a probe
reaches covers them all.

With several granian workers, each is a full copy of the app: its own key ring, reloads, etcd
publisher and audit log. A probe reaches one of them, so a worker that had not followed a key
rotation, or whose reload failed, went unseen as long as another one answered. Each worker
writes its own readiness (status, active key, warnings) to a file in the directory the
workers already share (the metrics' multiprocess directory) when it changes, looking every
`reload_interval`, and when it answers /readyz; that answer then adds the other live
workers' records. With one process there is nothing to share: every function here does
nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.api.metrics_http import MULTIPROC_ENV
from app.atomic import write_atomic
from app.errors import RegistryAuthError

_PREFIX, _SUFFIX = "readyz-", ".json"  # not *.db: prometheus-client's collector reads only those


@dataclass(frozen=True, slots=True)
class WorkerReadiness:
    pid: int
    ready: bool  # False: it cannot sign a token
    active_kid: str
    warnings: tuple[str, ...]


_written: dict[str, bytes] = {}  # path -> what this process last wrote there
# Set in granian's main process before it forks any worker (share_among_workers): one process
# (`workers: 1`) has the metrics' directory too, but no other worker to share with.
_several = False


def share_among_workers() -> None:
    """In granian's main process, before the workers are forked: they inherit it."""
    global _several  # noqa: PLW0603 - inherited by the workers forked from now on
    _several = True


def shared() -> bool:
    """Whether there are workers to share with (several processes)."""
    return _sharing() is not None


def _sharing() -> Path | None:
    return shared_directory() if _several else None


def publish(own: WorkerReadiness) -> None:
    """Record this worker's readiness for the others, if it changed (a write, else nothing)."""
    directory = _sharing()
    if directory is None:
        return
    path = directory / f"{_PREFIX}{own.pid}{_SUFFIX}"
    text = orjson.dumps(
        {"ready": own.ready, "active_kid": own.active_kid, "warnings": list(own.warnings)}
    )
    if _written.get(str(path)) == text and path.exists():
        return
    with contextlib.suppress(RegistryAuthError):  # the directory gone at shutdown
        write_atomic(path, text, mode=0o600, guard_root=False)
        _written[str(path)] = text


def others(own_pid: int) -> list[WorkerReadiness]:
    """The records of the other workers still running, by PID; those of workers gone are
    removed (a worker replaced after a crash, or by a roll)."""
    directory = _sharing()
    if directory is None:
        return []
    found = []
    for path in sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}")):
        pid_text = path.name.removeprefix(_PREFIX).removesuffix(_SUFFIX)
        if not pid_text.isdigit() or int(pid_text) == own_pid:
            continue
        pid = int(pid_text)
        if not _running(pid):
            path.unlink(missing_ok=True)
            continue
        record = _read(path, pid)
        if record is not None:
            found.append(record)
    return found


def _read(path: Path, pid: int) -> WorkerReadiness | None:
    try:
        data: Any = orjson.loads(path.read_bytes())
        return WorkerReadiness(
            pid, bool(data["ready"]), str(data["active_kid"]), tuple(map(str, data["warnings"]))
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None  # gone meanwhile (written atomically, it is never half there)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone; its PID now another user's
        return False
    return True


def shared_directory() -> Path | None:
    """The directory the workers share (the metrics' multiprocess one), or None: one process."""
    directory = os.environ.get(MULTIPROC_ENV)
    return Path(directory) if directory else None


# Which roll of the workers this is: the main process counts one more before each (a SIGHUP,
# a certificate roll), and a worker notes the count it started under. A worker that sees a
# higher count is being replaced by workers on a config read after it (app.etcd.publisher).
_GENERATION = "roll-generation"


def next_generation() -> None:
    """In the main process, before a roll."""
    directory = _sharing()
    if directory is None:
        return
    with contextlib.suppress(RegistryAuthError):  # the directory gone at shutdown
        text = str(generation() + 1).encode()
        write_atomic(directory / _GENERATION, text, mode=0o600, guard_root=False)


def generation() -> int:
    """The count of rolls so far (0: none, or one process)."""
    directory = _sharing()
    if directory is None:
        return 0
    try:
        return int((directory / _GENERATION).read_bytes())
    except (OSError, ValueError):
        return 0


def replaced_after(started: int) -> bool:
    """Whether a roll began after `started` (a generation): workers of a newer one run."""
    return generation() > started
