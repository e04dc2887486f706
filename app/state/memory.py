"""Failed-login counters in this process's memory: for `state.backend: none`, where nothing is
stored on disk, and for any other store's outage (LoginThrottle's fallback). Bounded: the oldest
counters go first, so a flood of addresses cannot grow it. Called from worker threads and the
event loop at once: each change reads and writes a counter under a lock (unlocked, two threads
failing at once could count one failure)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from app.state.attempts import FailureCount


class MemoryFailureStore:
    def __init__(self, max_keys: int = 100_000) -> None:
        self._counts: OrderedDict[str, FailureCount] = OrderedDict()
        self._max_keys = max_keys
        self._lock = threading.Lock()

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        live = {}
        for key in keys:
            count = self._counts.get(key)
            if count is not None and now - count.last_at <= window:
                live[key] = count
        return live

    def failures_now(
        self, keys: list[str], now: float, window: int
    ) -> dict[str, FailureCount] | None:
        return self.failures(keys, now, window)  # memory: always at once

    def add_failure(self, keys: list[str], now: float, window: int) -> None:
        with self._lock:
            for key in keys:
                previous = self._counts.pop(key, None)
                if previous is None or now - previous.last_at > window:
                    self._counts[key] = FailureCount(1, now)
                else:
                    self._counts[key] = FailureCount(previous.count + 1, now)
            while len(self._counts) > self._max_keys:
                self._counts.popitem(last=False)

    def reset(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def live(self, now: float, window: int) -> dict[str, FailureCount]:
        """Every counter whose last failure is within `window` seconds."""
        with self._lock:
            return {
                key: count for key, count in self._counts.items() if now - count.last_at <= window
            }

    def take(self, key: str, count: int) -> None:
        """`count` failures of `key` are counted elsewhere now: they leave this store."""
        with self._lock:
            held = self._counts.get(key)
            if held is not None:
                if held.count <= count:
                    del self._counts[key]
                else:
                    self._counts[key] = FailureCount(held.count - count, held.last_at)

    def close(self) -> None:
        """Nothing to let go of."""
