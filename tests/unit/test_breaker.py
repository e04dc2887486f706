"""The circuit breaker, driven by a fixed clock."""

from __future__ import annotations

from app.breaker import BreakerState, CircuitBreaker


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, reset_after=10)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success()  # a success in between resets the count
    breaker.record_failure(0)
    breaker.record_failure(0)
    assert breaker.allow(0)
    breaker.record_failure(1)
    assert breaker.state(1) is BreakerState.OPEN
    assert not breaker.allow(10.9)


def test_half_open_lets_one_trial_through() -> None:
    breaker = CircuitBreaker(failures=1, reset_after=10)
    breaker.record_failure(0)
    assert breaker.state(10) is BreakerState.HALF_OPEN
    assert breaker.allow(10)
    assert not breaker.allow(10)  # a second caller waits for the trial's outcome
    breaker.record_success()
    assert breaker.state(10) is BreakerState.CLOSED
    assert breaker.allow(10)


def test_failed_trial_reopens_for_a_full_period() -> None:
    breaker = CircuitBreaker(failures=5, reset_after=10)
    for _ in range(5):
        breaker.record_failure(0)
    assert breaker.allow(10)
    breaker.record_failure(10)
    assert breaker.state(19) is BreakerState.OPEN
    assert breaker.state(20) is BreakerState.HALF_OPEN
