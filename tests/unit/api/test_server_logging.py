"""The server's log lines never wait for stderr's reader: with the pipe full a line is dropped
at once, and once the reader catches up the next line says how many were."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import socket
import struct
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app import LOG_FORMAT
from app.api.server_logging import NeverWaitingStderr

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<rest>.*)$")


def _logger(handler: logging.Handler) -> logging.Logger:
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("test.server_logging")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def _drain(fd: int) -> list[str]:
    os.set_blocking(fd, False)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return out.decode().splitlines()
        if not chunk:
            return out.decode().splitlines()
        out += chunk


class WaitedForReaderError(Exception):  # not an OSError: the handler must not take it for one
    pass


@contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Fail, not hang, when a write waits for the reader (SIGALRM interrupts it)."""

    def too_long(signum: int, frame: object) -> None:
        raise WaitedForReaderError(f"logging waited more than {seconds} s for the reader")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _pipe_free(fd: int) -> int:
    size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    queued = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return int(size - queued)


def test_a_full_pipe_drops_lines_at_once_and_the_next_one_says_how_many(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    handler = NeverWaitingStderr(write)
    log = _logger(handler)
    with _within(5):
        for n in range(3000):  # ~250 KB: far more than the pipe's 64 KiB; a blocking write waits
            log.info("line %d from a server whose reader stopped reading", n)
    assert os.get_blocking(write)  # stderr's own descriptor, shared, is left as it was
    received = _drain(read)
    assert 100 < len(received) < 3000
    assert all(line.endswith("whose reader stopped reading") for line in received)

    log.warning("after the reader caught up")
    notice, line = (LINE.fullmatch(text) for text in _drain(read))
    assert notice is not None
    assert line is not None
    assert notice["rest"] == (
        f"app.api.server_logging: {3000 - len(received)} log line(s) were dropped: stderr's "
        "reader was not keeping up"
    )
    assert (line["level"], line["rest"]) == (
        "WARNING",
        "test.server_logging: after the reader caught up",
    )
    log.info("and the next one alone")
    assert [LINE.fullmatch(text)["rest"] for text in _drain(read)] == [  # type: ignore[index]
        "test.server_logging: and the next one alone"
    ]
    handler.close()


def test_a_long_line_cut_short_leaves_the_next_on_a_line_of_its_own(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    log = _logger(NeverWaitingStderr(write))
    with _within(5):
        while _pipe_free(write) > 3000:
            log.info("x" * 100)
        log.info("y" * 20_000)  # a traceback's size: goes in part, or not at all
    _drain(read)
    log.info("after the long one")
    tail = _drain(read)
    last = LINE.fullmatch(tail[-1])
    assert last is not None
    assert last["rest"] == "test.server_logging: after the long one"


def test_a_socket_nobody_reads_drops_lines_at_once() -> None:
    """journald's stream socket, as systemd gives a unit's stderr."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        log = _logger(NeverWaitingStderr(ours.fileno()))
        with _within(10):
            for n in range(20_000):  # ~1.5 MB: past any socket buffer
                log.info("line %d to a socket nobody reads", n)


def test_a_file_gets_every_line(tmp_path: Path) -> None:
    path = tmp_path / "stderr.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        log = _logger(NeverWaitingStderr(fd))
        for n in range(500):
            log.info("line %d", n)
    finally:
        os.close(fd)
    lines = path.read_text().splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == [str(n) for n in range(500)]
