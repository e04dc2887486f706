"""The log configuration of both servers (uvicorn's and granian's own lines, and the app's): one
format, on stderr, apart from the audit lines on stdout."""

from __future__ import annotations

from typing import Any

from app import LOG_FORMAT, QUIET_LOGGERS


def uvicorn_logging() -> dict[str, Any]:
    """uvicorn's own lines (`uvicorn.error`: start, stop) in the app's format, on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        **_stderr_logging(),
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
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}
    return {
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"console": handler, "access": dict(handler)},  # dictConfig pops keys
    }
