"""Private directories under the temporary directory (TMPDIR, else /tmp), for as long as their
process runs: the copies of the TLS pair granian's workers load, the workers' metrics files.

Each is removed when its process exits. One killed by SIGKILL (the OOM killer, `kill -9`)
cannot do that, and would leave behind, among others, a copy of the TLS private key. So the
process holds a lock on its directory (flock, which the kernel drops when the process dies,
however it dies), and each new one removes the directories of its kind that no process holds,
in any container sharing the directory. A directory is locked before it gets its name, so one
being made is never taken for one left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class PrivateDirectory:
    """A new directory (0700) named `registry-auth-KIND.*`, locked while this process (and the
    processes forked from it) keep it open."""

    def __init__(self, kind: str) -> None:
        base = Path(tempfile.gettempdir())
        remove_left_behind(kind, base)
        making = Path(tempfile.mkdtemp(prefix=f".registry-auth-{kind}-new.", dir=base))
        self._fd = os.open(making, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.path = base / f"registry-auth-{kind}.{secrets.token_hex(8)}"
        making.rename(self.path)  # locked and private before any other process may look

    def ensure(self) -> None:
        """Make the directory again (0700, locked anew) if a cleaner of old files removed it."""
        if self._fd < 0 or self.path.exists():
            return
        with contextlib.suppress(FileExistsError):
            self.path.mkdir(mode=0o700)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        """Remove the directory and let go of it."""
        if self._fd < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = -1


def private_directory(kind: str) -> Path:
    """A PrivateDirectory of `kind` that lasts until this process exits."""
    directory = PrivateDirectory(kind)
    atexit.register(directory.close)
    return directory.path


@contextlib.contextmanager
def scratch_directory(kind: str) -> Iterator[Path]:
    """A PrivateDirectory of `kind` for the time of a `with` block."""
    directory = PrivateDirectory(kind)
    try:
        yield directory.path
    finally:
        directory.close()


def remove_left_behind(kind: str, base: Path) -> list[Path]:
    """Remove the directories of `kind` in `base` that no process holds; the ones removed."""
    removed = []
    for path in base.glob(f"registry-auth-{kind}.*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, not a directory, someone else's
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its process runs
            os.close(fd)
            continue
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed %s, left behind by a process that was killed", path)
                removed.append(path)
        finally:
            os.close(fd)
    return removed
