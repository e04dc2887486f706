"""LogEvery: a warning that would repeat on every request, once per interval with a count."""

from __future__ import annotations

import logging

import pytest

from app.log_limit import LogEvery
from tests.fake_clock import FakeClock


def test_a_repeated_warning_is_logged_once_per_interval_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limited = LogEvery(logging.getLogger("test.limit"), interval=60, clock=clock)
    caplog.set_level(logging.WARNING, "test.limit")
    for n in range(5):
        limited.log(logging.WARNING, "down", "store down: %s", n)
        clock.now += 10
    limited.log(logging.ERROR, "other", "another kind: %s", "x")  # kinds are apart
    clock.now += 20  # 70 s after the first line
    limited.log(logging.WARNING, "down", "store down: %s", 9)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "store down: 0"),
        (logging.ERROR, "another kind: x"),
        (logging.WARNING, "store down: 9 (and 4 more like it since the last such line, 70 s ago)"),
    ]
