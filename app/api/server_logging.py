"""The log configuration of both servers (uvicorn's and granian's own lines, and the app's): one
format, on stderr, apart from the audit lines on stdout, written without ever waiting for
stderr's reader (NeverWaitingStderr)."""

from __future__ import annotations

import logging
import os
from typing import Any

from app import LOG_FORMAT, QUIET_LOGGERS
from app.api.nonblocking import never_waiting


def uvicorn_logging() -> dict[str, Any]:
    """uvicorn's own lines (`uvicorn.error`: start, stop) and the app's in the app's format, on
    stderr (the app's replace the command line's handler, which would wait for the reader)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        **_stderr_logging(),
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            **_quiet_loggers(),
        },
    }


def granian_logging() -> dict[str, Any]:
    """Granian's own log lines and the app's (`app.*`, INFO and up) on stderr, as uvicorn mode
    writes them: with the time and the logger, and apart from the audit lines on stdout.
    (granian's default wrote `[LEVEL] message` to stdout, between the audit lines.)"""
    return {
        **_stderr_logging(),
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": _quiet_loggers(),
    }


def _quiet_loggers() -> dict[str, Any]:
    return {name: {"level": "WARNING"} for name in QUIET_LOGGERS}


def _stderr_logging() -> dict[str, Any]:
    """A `console` handler (and granian's `access`, which stays off) writing LOG_FORMAT lines
    to stderr: the part of a dictConfig both servers share."""
    handler = {"()": f"{__name__}.NeverWaitingStderr", "formatter": "plain"}
    return {
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"console": handler, "access": dict(handler)},  # dictConfig pops keys
    }


class NeverWaitingStderr(logging.Handler):
    """Log lines to stderr, each one write(2) that never waits for stderr's reader.

    Under a supervisor stderr is a pipe (or journald's socket). When its reader stalls and the
    pipe fills, a plain StreamHandler's write blocks the thread that logs: a worker's event
    loop, and every request it serves, until the reader comes back; in granian's main process,
    the replacing of workers. Here a line that does not fit is dropped, and the first line
    that goes through again is preceded by one saying how many were dropped. A file or a
    terminal is written as before. A line longer than a pipe takes at once (PIPE_BUF, 4 KiB: a
    traceback) may go in part; the next line then starts on a line of its own.
    """

    def __init__(self, fd: int = 2) -> None:
        super().__init__()
        self._fd, self._room = never_waiting(fd, owned=False)
        self._own = self._fd != fd  # a descriptor of our own, to close
        self._dropped = 0
        self._cut = False  # the last line went in part

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode("utf-8", "backslashreplace") + b"\n"
        except Exception:  # noqa: BLE001 - a bad format string: logging's own report
            self.handleError(record)
            return
        head = (b"\n" if self._cut else b"") + (self._notice() if self._dropped else b"")
        line = head + line
        if self._room is not None and not self._room(len(line)):
            self._dropped += 1
            return
        try:
            written = os.write(self._fd, line)
        except OSError:  # EAGAIN: the pipe is full; or stderr closed: nowhere to say it
            self._dropped += 1
            return
        self._cut = written < len(line)
        if written >= len(head):  # the notice went out: count anew
            self._dropped = 0

    def _notice(self) -> bytes:
        notice = logging.makeLogRecord(
            {
                "name": __name__,
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": "%d log line(s) were dropped: stderr's reader was not keeping up",
                "args": (self._dropped,),
            }
        )
        return self.format(notice).encode() + b"\n"

    def close(self) -> None:
        if self._own:
            self._own = False
            os.close(self._fd)
        super().close()
