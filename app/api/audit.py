"""The audit log: one JSON line per token decision, to stdout or appended to a file.

Fields (README, Audit log): time, request_id, client_ip, account, service, client_id,
requested, granted, outcome, reason, kid, jti, reuse. Never a password, a token or a refresh
token: a decision is built from named fields only, never from the request as a whole. JSON
escapes every control character, so an account name holding CR/LF cannot forge a line. Each
line is one write(2) on an O_APPEND descriptor, so several processes can share one file.
After logrotate moves the file away, `reopen_if_moved` (polled by the app) opens the path anew.

A line that cannot be written is dropped, counted (registry_auth_audit_lines_dropped_total)
and logged once until lines go through again: tokens keep being issued (a full disk must not
stop every pull and push), and the event loop never waits on the log. A pipe (stdout under a
supervisor) whose reader has fallen behind, or a socket (journald) that cannot take a line at
once, counts as such a failure: a write there would block every request of the process, and
SIGTERM, until the reader came back. A pipe is written through a non-blocking descriptor of its
own (app.api.nonblocking).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import orjson

from app.api.nonblocking import Room, never_waiting
from app.errors import BackendUnavailableError, ClientError, ConfigError, StateStoreError
from app.metrics import metrics
from app.protocol.scopes import Scope
from app.service import IssuedToken

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_OUTCOMES = {400: "invalid", 401: "unauthorized", 429: "throttled", 503: "unavailable"}


@dataclass  # no slots: `line` renders __dict__; mypy --strict still rejects a misspelt field
class Decision:
    """One token decision, filled in as the request is understood; a line is the time it was
    written, then these fields in this order (FIELDS)."""

    request_id: str
    client_ip: str | None
    grant: str  # "get", "password" or "refresh_token"
    account: str | None = None
    service: str | None = None
    client_id: str | None = None
    requested: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    outcome: str = "error"
    reason: str = "internal error"
    kid: str | None = None
    jti: str | None = None
    reuse: bool = False

    def ask(self, scopes: Sequence[Scope], service: str | None, client_id: str | None) -> None:
        self.requested = [str(scope) for scope in scopes]
        # Absent or empty (docker and containerd POST it empty): null, either way.
        self.service, self.client_id = service or None, client_id

    def issued(self, token: IssuedToken) -> None:
        self.granted = [str(scope) for scope in token.granted if scope.actions]
        self.account = token.account if token.account is not None else self.account
        self.kid, self.jti, self.reuse = token.kid, token.jti, token.reuse
        if self.granted == self.requested:
            self.outcome, self.reason = "granted", "ok"
        elif self.granted:
            self.outcome, self.reason = "partial", "some requested actions are not allowed"
        else:  # still a 200 with a token: the registry then answers the client 401/403
            self.outcome, self.reason = "denied", "no requested action is allowed"

    def cut(self) -> None:
        """The request was still running at `shutdown_timeout` after SIGTERM (its task
        cancelled): the client is answered 503 (app.api.app.TokenServer), not an internal
        error."""
        self.outcome = "unavailable"
        self.reason = "temporarily_unavailable: the server is shutting down"

    def refused(self, exc: Exception) -> None:
        # A store outage is answered 503 (app.api.token_get.error_answer), not as a bug.
        status = 503 if isinstance(exc, StateStoreError) else getattr(exc, "status", 500)
        self.outcome = _OUTCOMES.get(status, "unavailable" if status == 503 else "error")
        if isinstance(exc, ClientError):
            self.reason = f"{exc.code}: {exc.message}"
            why = getattr(exc, "reason", None)
            self.reason += f" ({why})" if why else ""
            # A refused refresh grant whose token's record was found names its account.
            self.account = getattr(exc, "account", None) or self.account
        elif isinstance(exc, StateStoreError):
            self.reason = "temporarily_unavailable: the refresh-token store is unavailable"
        elif isinstance(exc, BackendUnavailableError):  # its name and why (never an address)
            self.reason = f"{exc.code}: {exc.body()['details']} ({exc.cause})"
        elif status == 503:
            self.reason = f"{getattr(exc, 'code', 'unavailable')}: {type(exc).__name__}"

    def line(self, now: float) -> bytes:
        # Its __dict__ holds every field in declaration order (__init__ sets each one): orjson
        # renders that dict in a third of the instructions it takes for a slots dataclass.
        return orjson.dumps(
            {"time": utc_millis(now), **self.__dict__}, option=orjson.OPT_APPEND_NEWLINE
        )


def utc_millis(now: float) -> str:
    """`now` (>= 0) as `datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")`
    writes it (microseconds rounded half-even, then cut to milliseconds), with the part down to
    the second rendered once per second: this runs for every token."""
    whole = int(now)
    micros = round((now - whole) * 1e6)  # the subtraction is exact
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return _second_text(whole) + _MILLIS[micros // 1000]


_MILLIS = tuple(f".{millis:03d}+00:00" for millis in range(1000))


@functools.lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds").removesuffix("+00:00")


FIELDS = ("time", *(f.name for f in fields(Decision)))  # the keys of every line, in order


class AuditLog:
    """Where decisions go; `None` destination: nowhere."""

    def __init__(self, destination: str | None, clock: Clock) -> None:
        self._clock = clock
        self._fd: int | None = None
        self._path: Path | None = None
        self._reopen_error: str | None = None
        self._room: Room | None = None  # a socket: would a line block?
        self._dropped = 0  # lines dropped since the last one written
        self._cut = False  # a line was cut short: the next one starts on a line of its own
        self._no_reader = False  # a FIFO nobody reads yet: opened by the next poll that can
        if destination == "-":
            self._fd = 1
        elif destination is not None:
            self._path = Path(destination)
            # No mkdir: a mistyped directory is an error, not a new tree the log goes to.
            if not self._path.parent.is_dir():
                raise ConfigError(
                    "audit_log",
                    f"cannot open {destination}: its directory {self._path.parent} does not exist",
                )
            try:
                self._fd = _open(self._path)
            except OSError as exc:  # a directory, a path under /proc, no permission: say which
                if not _no_reader(exc, self._path):  # a socket is ENXIO too: never opened
                    raise ConfigError(
                        "audit_log", f"cannot open {destination}: {exc.strerror or exc}"
                    ) from None
                # A FIFO whose reader (a log shipper) has not started yet.
                self._no_reader = True
                log.warning(
                    "audit log %s: no process reads this FIFO yet: lines are dropped and "
                    "counted until one does (tried again every reload_interval)",
                    self._path,
                )
        if self._fd is not None:  # stdout, or a FIFO a log shipper reads
            self._fd, self._room = never_waiting(self._fd, owned=self._fd != 1)

    def write(self, decision: Decision) -> None:
        if self._fd is None:
            if self._no_reader:
                self._drop("no process reads the FIFO")
            return
        line = decision.line(self._clock())
        if self._cut:
            line = b"\n" + line
        if self._room is not None and not self._room(len(line)):
            self._drop("its reader is not keeping up")
            return
        try:
            written = os.write(self._fd, line)
        except BlockingIOError:  # a pipe with no room: nothing of the line was written
            self._drop("its reader is not keeping up")
            return
        except OSError as exc:  # a full disk (ENOSPC), an I/O error, a reader gone (EPIPE)
            self._drop(exc.strerror or type(exc).__name__)
            return
        # A line longer than PIPE_BUF (4 KiB: many long scopes) may go into a full pipe in
        # part: the rest is dropped, and the next line begins on a line of its own.
        self._cut = written < len(line)
        if self._cut:
            self._drop("its reader is not keeping up; a long line was cut")
            return
        if self._dropped:
            log.warning("audit log: writing again, after %d line(s) were dropped", self._dropped)
            self._dropped = 0

    @property
    def dropping(self) -> bool:
        """Whether the last line could not be written."""
        return self._dropped > 0

    def _drop(self, why: str) -> None:
        if not self._dropped:
            log.error(
                "audit log %s: a line could not be written (%s): tokens are still issued; "
                "lines are dropped and counted (registry_auth_audit_lines_dropped_total) "
                "until one goes through",
                self._path or "(stdout)",
                why,
            )
        self._dropped += 1
        metrics().audit_lines_dropped.inc()

    def reopen_if_moved(self) -> bool:
        """If the file was moved away or removed (logrotate), open the path again: True then.

        Until this runs, lines still go to the moved file (logrotate's `delaycompress` keeps it
        uncompressed for that). If the path cannot be opened, the old file keeps the lines and
        the error is logged once."""
        if self._path is None or (self._fd is None and not self._no_reader):
            return False
        try:
            if self._fd is not None and _same_file(self._path.stat(), os.fstat(self._fd)):
                return False
        except FileNotFoundError:
            pass  # removed, or its directory moved: create it again
        except OSError as exc:
            self._failed(exc, "cannot be checked")
            return False
        try:
            fd = _open(self._path)
        except OSError as exc:
            self._failed(exc, "moved away but cannot be opened again")
            return False
        fd, room = never_waiting(fd, owned=True)
        old, self._fd, self._room, self._reopen_error = self._fd, fd, room, None
        if old is not None:
            os.close(old)
            log.info("audit log %s was moved away: writing to a new file there", self._path)
        else:
            log.info("audit log %s: a process reads the FIFO now: writing to it", self._path)
        self._no_reader = False
        return True

    def _failed(self, exc: OSError, what: str) -> None:
        """One error line per new problem, not one per poll."""
        if self._fd is None and _no_reader(exc, self._path):
            return  # still no reader of the FIFO: said at the start, and counted per line
        problem = f"{what}: {exc.strerror}"
        if problem != self._reopen_error:
            log.error("audit log %s %s; still writing to the old file", self._path, problem)
        self._reopen_error = problem

    def close(self) -> None:
        if self._fd is not None and self._fd != 1:
            os.close(self._fd)
        self._fd = None


def _open(path: Path) -> int:
    """Non-blocking: opening a FIFO to write waits until a process opens it to read, which
    stopped the event loop (and the main process, checking a SIGHUP's config) until a log
    shipper came; now a FIFO with no reader fails at once, with ENXIO."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o640)


def _no_reader(exc: OSError, path: Path | None) -> bool:
    """Whether opening `path` failed only because no process reads the FIFO there."""
    if exc.errno != errno.ENXIO or path is None:
        return False
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
