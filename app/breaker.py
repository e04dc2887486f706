"""A circuit breaker: after N outages in a row, stop calling for a while, then try once.

Time is a parameter (`now`), so tests drive it without sleeping. States: closed (calls go
through), open (calls refused until `reset_after` seconds have passed), half-open (one trial
call; success closes, failure opens again).
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, reset_after: float) -> None:
        self._threshold = failures
        self._reset_after = reset_after
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    def state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now - self._opened_at >= self._reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self, now: float) -> bool:
        """May a call go out now? In half-open state only one trial at a time."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self, now: float) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self._threshold:
            self._opened_at = now
        self._trial_running = False
