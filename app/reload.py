"""Hot reload: state loaded from files, swapped in whole when the files change.

A reload parses and validates everything first and swaps one reference; readers take
`current` once per request, so an in-flight request keeps the state it started with. A failed
reload logs the error and keeps the old state in force.

Changes are found by polling each file's (inode, size, mtime): that also sees files replaced
by rename (atomic writes, Kubernetes ConfigMap symlink swaps), which an inotify watch on the
file itself misses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Fingerprint = tuple[tuple[int, int, int] | None, ...]


def fingerprint(paths: Sequence[Path]) -> Fingerprint:
    """What identifies each file's content cheaply; None for a missing file."""
    prints: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            prints.append(None)
        else:
            prints.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(prints)


class Reloadable(Generic[T]):
    """A value loaded from files. Construction loads it (errors propagate: refuse to start)."""

    def __init__(self, name: str, loader: Callable[[], T], paths: Callable[[], Sequence[Path]]):
        self.name = name
        self._loader = loader
        self._paths = paths
        self._seen = fingerprint(paths())
        self.current: T = loader()
        self.last_error: str | None = None

    def get(self) -> T:
        return self.current

    def changed(self) -> bool:
        return fingerprint(self._paths()) != self._seen

    def reload(self) -> bool:
        """Load again; swap on success. False (old state kept, error logged) on failure."""
        seen = fingerprint(self._paths())
        try:
            value = self._loader()
        except Exception as exc:  # noqa: BLE001 - any loader failure must keep the old state
            self.last_error = str(exc)
            self._seen = seen  # do not retry the same broken content on every poll
            # One line naming the file and the problem; a traceback helps no operator here.
            log.error("reload of %s failed, keeping the previous one: %s", self.name, exc)  # noqa: TRY400
            return False
        self.current = value
        self._seen = seen
        self.last_error = None
        log.info("reloaded %s", self.name)
        return True

    def reload_if_changed(self) -> bool:
        return self.reload() if self.changed() else False
