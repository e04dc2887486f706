"""A poll applies a changed file only once it has not been written to for a second: a file
rewritten in place is empty for a moment, and valid (no account, no rule)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import reload
from app.reload import Reloadable, written_lately


@pytest.fixture(autouse=True)
def _settling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload, "SETTLE_SECONDS", 1.0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _written_at(path: Path, text: str, when: float) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, (when, when))


def test_a_file_caught_mid_rewrite_is_applied_only_once_it_settled(tmp_path: Path) -> None:
    users = tmp_path / "users"
    _written_at(users, "alice\nbob\n", 1000.0)
    clock = Clock(2000.0)
    names = Reloadable("users", lambda: users.read_text().split(), lambda: [users], clock=clock)
    _written_at(users, "", 2000.0)  # truncated: the rest is on its way
    clock.now = 2000.5
    assert names.reload_if_changed() is False
    assert names.current == ["alice", "bob"]
    _written_at(users, "alice\nbob\ncarol\n", 2000.7)  # done
    clock.now = 2001.2  # written 0.5 s ago: wait once more
    assert names.reload_if_changed() is False
    clock.now = 2001.8
    assert names.reload_if_changed() is True
    assert names.current == ["alice", "bob", "carol"]


def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    users = tmp_path / "users"
    _written_at(users, "alice\n", 1000.0)
    clock = Clock(2000.0)
    names = Reloadable("users", lambda: users.read_text().split(), lambda: [users], clock=clock)
    _written_at(users, "alice\nbob\n", 2000.0)
    assert names.reload() is True  # what SIGHUP calls: the operator says the file is done
    assert names.current == ["alice", "bob"]


def test_a_modification_time_in_the_future_is_not_waited_for(tmp_path: Path) -> None:
    shared = tmp_path / "acl"
    _written_at(shared, "x", 5000.0)  # written on a machine whose clock is ahead (NFS)
    assert written_lately([shared], 2000.0) is False
    assert written_lately([shared], 5000.5) is True
    assert written_lately([tmp_path / "missing"], 2000.0) is False


def test_a_file_written_to_all_the_time_is_loaded_after_ten_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync job rewriting it twice a second: held back for ever, it was never read again."""
    users = tmp_path / "users"
    _written_at(users, "alice\n", 1000.0)
    clock = Clock(2000.0)
    names = Reloadable("users", lambda: users.read_text().split(), lambda: [users], clock=clock)
    for step in range(20):  # 9.5 s of rewrites every half second
        clock.now = 2000.0 + step * 0.5
        _written_at(users, "alice\nbob\n", clock.now)
        assert names.reload_if_changed() is False
    clock.now = 2010.0
    _written_at(users, "alice\nbob\n", clock.now)
    assert names.reload_if_changed() is True
    assert names.current == ["alice", "bob"]
    assert "written to more often than once a second" in caplog.text
