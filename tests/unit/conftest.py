"""Unit tests write a watched file and poll at once: a change is applied without waiting for
the file to settle (app.reload.SETTLE_SECONDS), except in the tests of that wait itself
(tests/unit/test_reload_settle.py). The integration tests run the service as it ships."""

from __future__ import annotations

import pytest

from app import reload


@pytest.fixture(autouse=True)
def _no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload, "SETTLE_SECONDS", 0.0)
