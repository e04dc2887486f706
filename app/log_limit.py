"""Warnings that would repeat on every request while something is down (the state store, say):
at most one per kind and interval, the next one saying how many were held back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class LogEvery:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # called from worker threads and the event loop
        self._seen: dict[str, tuple[float, int]] = {}  # kind -> (last logged, held back since)

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        with self._lock:
            last, held = self._seen.get(kind, (None, 0))
            if last is not None and now - last < self._interval:
                self._seen[kind] = (last, held + 1)
                return
            self._seen[kind] = (now, 0)
        if held and last is not None:  # held back only after a line was logged
            message += " (and %d more like it since the last such line, %.0f s ago)"
            args = (*args, held, now - last)
        self._logger.log(level, message, *args)
