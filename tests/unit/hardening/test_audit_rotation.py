"""The audit file after logrotate: the path is opened anew, no line is lost, errors say so once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from fastapi import FastAPI

from app.api.audit import AuditLog, Decision
from app.api.lifespans import polling_lifespan
from app.errors import ConfigError

T = TypeVar("T")


def _decision(account: str) -> Decision:
    decision = Decision("rid", "127.0.0.1", "get")
    decision.account = account
    return decision


def _accounts(path: Path) -> list[str]:
    return [json.loads(line)["account"] for line in path.read_text().splitlines()]


def test_a_moved_file_is_replaced_by_a_new_one_at_the_same_path(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), lambda: 0.0)
    audit.write(_decision("before"))
    assert audit.reopen_if_moved() is False  # nothing happened yet: same file kept
    path.rename(tmp_path / "audit.jsonl.1")  # what logrotate does
    audit.write(_decision("in-between"))  # before the next poll: still the moved file
    assert audit.reopen_if_moved() is True
    audit.write(_decision("after"))
    audit.close()
    assert _accounts(tmp_path / "audit.jsonl.1") == ["before", "in-between"]
    assert _accounts(path) == ["after"]
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_removed_file_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), lambda: 0.0)
    path.unlink()
    assert audit.reopen_if_moved() is True
    audit.write(_decision("after"))
    audit.close()
    assert _accounts(path) == ["after"]


def _directory_gone(folder: Path) -> None:
    pass  # open() fails: the directory is not there


def _file_instead_of_directory(folder: Path) -> None:
    folder.write_text("")  # stat() fails with ENOTDIR


@pytest.mark.parametrize(
    ("break_path", "problem"),
    [
        (_directory_gone, "moved away but cannot be opened again"),
        (_file_instead_of_directory, "cannot be checked"),
    ],
)
def test_a_path_that_cannot_be_reopened_keeps_the_old_file_and_logs_once(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    break_path: Callable[[Path], None],
    problem: str,
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    audit = AuditLog(str(folder / "audit.jsonl"), lambda: 0.0)
    folder.rename(tmp_path / "logs.old")
    break_path(folder)
    with caplog.at_level(logging.ERROR, logger="app.api.audit"):
        assert audit.reopen_if_moved() is False
        assert audit.reopen_if_moved() is False
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert problem in errors[0]
    assert "still writing to the old file" in errors[0]
    assert str(folder / "audit.jsonl") in errors[0]
    audit.write(_decision("kept"))
    audit.close()
    assert _accounts(tmp_path / "logs.old" / "audit.jsonl") == ["kept"]


def test_a_missing_directory_is_refused_not_made(tmp_path: Path) -> None:
    """A mistyped directory made a new tree (mode 0755) that the log went to, silently."""
    destination = tmp_path / "no" / "such" / "audit.jsonl"
    with pytest.raises(ConfigError) as caught:
        AuditLog(str(destination), lambda: 0.0)
    assert caught.value.key == "audit_log"
    assert f"its directory {destination.parent} does not exist" in caught.value.problem
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("destination", ["-", None])
def test_stdout_and_no_audit_have_nothing_to_reopen(destination: str | None) -> None:
    assert AuditLog(destination, lambda: 0.0).reopen_if_moved() is False


@pytest.mark.anyio
async def test_the_polling_lifespan_calls_every_check_and_survives_a_failing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise OSError("disk gone")

    lifespan = polling_lifespan(0.01, broken, lambda: calls.append("fine"))
    with caplog.at_level(logging.ERROR, logger="app.api.lifespans"):
        async with lifespan(FastAPI()):
            await asyncio.sleep(0.1)
    assert calls.count("broken") >= 3
    assert calls.count("fine") >= 3  # a failing check does not stop the others, or the loop
    assert "periodic check" in caplog.text
    assert "disk gone" in caplog.text
    stopped = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == stopped  # the task ends with the app


def _at_once(call: Callable[[], T], fifo: Path) -> T:
    """`call`'s result, failing the test if it waits: a blocking open of a FIFO nobody reads
    waited for ever (the event loop, or the main process checking a SIGHUP, with it). A reader
    opened afterwards lets such a stuck thread end."""
    done: list[T] = []
    worker = threading.Thread(target=lambda: done.append(call()), daemon=True)
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        pytest.fail("it waited for a reader of the FIFO")
    return done[0]


def test_a_fifo_nobody_reads_yet_drops_lines_until_a_reader_comes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A log shipper starting after the service, or making its FIFO anew: opening it to write
    waited until it read, every request and SIGTERM with it."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    with caplog.at_level(logging.INFO, logger="app.api.audit"):
        audit = _at_once(lambda: AuditLog(str(fifo), lambda: 0.0), fifo)
        assert "no process reads this FIFO yet" in caplog.text
        audit.write(_decision("unread"))
        assert audit.dropping
        assert _at_once(audit.reopen_if_moved, fifo) is False  # still nobody: tried, not waited
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        assert audit.reopen_if_moved() is True
        assert "a process reads the FIFO now" in caplog.text
        audit.write(_decision("read"))
        assert not audit.dropping
        assert json.loads(os.read(reader, 65536))["account"] == "read"
        # The shipper makes its FIFO anew and is not reading it yet.
        fifo.unlink()
        os.mkfifo(fifo)
        assert _at_once(audit.reopen_if_moved, fifo) is False
    os.close(reader)
    audit.close()


def test_a_unix_socket_is_refused_at_the_start_not_taken_for_a_fifo(tmp_path: Path) -> None:
    """Opening a socket fails with ENXIO too: it was taken for a FIFO nobody reads yet, and
    every line dropped for good (`/dev/log`, or `/dev/stdout` with stdout the journal)."""
    path = tmp_path / "audit.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    try:
        with pytest.raises(ConfigError) as caught:
            AuditLog(str(path), lambda: 0.0)
        assert caught.value.key == "audit_log"
        assert "No such device or address" in caught.value.problem
    finally:
        listener.close()
