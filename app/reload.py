"""Hot reload: state loaded from files, swapped in whole when the files change.

A reload parses and validates everything first and swaps one reference; readers take
`current` once per request, so an in-flight request keeps the state it started with. A failed
reload logs the error and keeps the old state in force.

Changes are found by polling each file's (inode, size, mtime, ctime): that also sees files
replaced by rename (atomic writes, Kubernetes ConfigMap symlink swaps), which an inotify watch
on the file itself misses, and a chmod or chown (the ctime), which is how an operator fixes a
file the service could not read: the reload that failed on it is then tried again.

A poll applies a change only once the file has not been written to for SETTLE_SECONDS: a file
rewritten in place (`cat new > users.htpasswd`, an editor saving over it) is first truncated,
and a poll landing in between loaded it empty, yet valid: every login failed, and the refresh
tokens of every account died at their next use. SIGHUP reloads at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

log = logging.getLogger(__name__)

T = TypeVar("T")
Fingerprint = tuple[tuple[int, ...] | None, ...]
Clock = Callable[[], float]
SETTLE_SECONDS = 1.0
# What a reload that empties a users file does (the log line's format: the name, the count
# before): the refresh tokens of the accounts it dropped die at their next use.
EMPTIED_USERS = (
    "%s now lists no account (it listed %d): every login through it fails, and a refresh "
    "token of an account it no longer lists is revoked at its next use"
)
HOLD_AT_MOST = 10.0


def fingerprint(paths: Sequence[Path]) -> Fingerprint:
    """What identifies each file's content and access cheaply; None for a missing file."""
    return tuple(_stat_print(path) for path in paths)


class Reloadable(Generic[T]):
    """A value loaded from files. Construction loads it (errors propagate: refuse to start)."""

    def __init__(
        self,
        name: str,
        loader: Callable[[], T],
        paths: Callable[[], Sequence[Path]],
        *,
        kind: str | None = None,
        size: Callable[[T], int] | None = None,
        emptied: str = EMPTIED_USERS,
        clock: Clock = time.time,
    ):
        self.name = name  # for the log and the metrics: "htpasswd /etc/registry-auth/users"
        self.kind = kind or name  # for /readyz, which anyone may ask: "htpasswd", no path
        self._loader = loader
        # What the value counts (a users file's accounts, an ACL's rules): a reload that
        # empties it is said, `emptied` saying what that does.
        self._size = size
        self._emptied = emptied
        self._paths = paths
        self._clock = clock
        self._held_since: float | None = None  # a change waiting to settle, since
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
        before, self.current = self.current, value
        self._seen = seen
        self.last_error = None
        log.info("reloaded %s", self.name)
        if self._size is not None and self._size(before) and not self._size(value):
            # Valid, but most likely a mistake (a placeholder deployed over the real file):
            # said loudly.
            log.warning(self._emptied, self.name, self._size(before))
        return True

    def reload_if_changed(self) -> bool:
        """A poll: reload when a file changed and has settled (see the module's docstring), or
        has been held back for HOLD_AT_MOST seconds (a file written to more often than once a
        second would otherwise never be read again)."""
        if not self.changed():
            self._held_since = None
            return False
        now = self._clock()
        if written_lately(self._paths(), now):
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since < HOLD_AT_MOST:
                return False
            log.warning(
                "%s is written to more often than once a second: loaded all the same", self.name
            )
        self._held_since = None
        return self.reload()


def written_lately(paths: Sequence[Path], now: float) -> bool:
    """Whether a file's content was written less than SETTLE_SECONDS before `now` (its mtime:
    a file renamed into place was written just before; a chmod is no partial write); a time in
    the future (another machine's clock, over NFS) is not waited for."""
    for path in paths:
        try:
            written = path.stat().st_mtime
        except OSError:
            continue
        if 0 <= now - written < SETTLE_SECONDS:
            return True
    return False


def files_named(model: BaseModel) -> list[Path]:
    """Every path a settings model names, in nested sections and lists too."""
    found: list[Path] = []
    for name in type(model).model_fields:
        _collect_paths(getattr(model, name), found)
    return found


def _collect_paths(value: object, found: list[Path]) -> None:
    if isinstance(value, Path):
        found.append(value)
    elif isinstance(value, BaseModel):
        found.extend(files_named(value))
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_paths(item, found)


def tree_fingerprint(paths: Sequence[Path]) -> tuple[object, ...]:
    """Like fingerprint, and also sees a chmod or chown (the ctime and mode) and, for a
    directory, what is in it (the key directory's key files)."""
    prints: list[object] = []
    for path in paths:
        prints.append(_stat_print(path))
        try:
            entries = sorted(os.scandir(path), key=lambda entry: entry.name)
        except OSError:  # not a directory, or not there
            continue
        prints.extend((entry.name, _stat_print(Path(entry))) for entry in entries)
    return tuple(prints)


def _stat_print(path: Path) -> tuple[int, ...] | None:
    """(inode, size, mtime, ctime, mode, owner): the ctime sees a chmod or chown."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)


class RetryGate:
    """When a start that failed on a broken file is worth trying again: once one of the files
    the settings name changed (its content, a rename onto it, a chmod or chown: the fix of a
    key file's mode changes no content), or `every` seconds after the last try all the same
    (a cause no file shows, such as a directory the service cannot write). A try builds the
    app up to the broken file (up to ~0.16 s of CPU: a dummy bcrypt hash, the key load):
    tried every 2 s, a broken ACL cost 0.97 s of CPU in 30 s, against 0.07 s through the gate."""

    def __init__(self, settings: BaseModel, every: float = 60.0, clock: Clock = time.monotonic):
        self._paths = files_named(settings)
        self._every = every
        self._clock = clock
        self._seen: tuple[object, ...] = ()
        self._tried = 0.0
        self.trying_now()

    def worth_trying(self) -> bool:
        """True when a try is due; the gate then counts one as made now."""
        seen, now = tree_fingerprint(self._paths), self._clock()
        if seen == self._seen and now - self._tried < self._every:
            return False
        self._seen, self._tried = seen, now
        return True

    def trying_now(self) -> None:
        """A try starts (call it before): a change from now on makes the next one due."""
        self._seen, self._tried = tree_fingerprint(self._paths), self._clock()
