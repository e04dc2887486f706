"""Writing lines where a reader may stop reading (stdout or stderr under a supervisor, a FIFO,
journald's socket) without ever waiting for it: the audit log and the server's log lines. A
write there that blocked would stop the event loop, every request of the process with it, and
SIGTERM, until the reader came back; such a line is dropped instead (and its loss said)."""

from __future__ import annotations

import fcntl
import os
import select
import stat
import struct
import termios
from collections.abc import Callable

# Whether a line of this many bytes can be written at once, without blocking.
Room = Callable[[int], bool]
_PAGE = 4096


def never_waiting(fd: int, *, owned: bool) -> tuple[int, Room | None]:
    """The descriptor to write to, and for a socket how to tell whether a write would wait.

    A pipe or FIFO is opened again through /proc/self/fd, non-blocking: a new open file
    description, so O_NONBLOCK is not set on stdout's or stderr's own, which other processes
    share. A write of up to PIPE_BUF bytes then goes in whole or fails with EAGAIN at once.
    `owned`: `fd` is the caller's alone (a FIFO it opened), closed once reopened. Without
    /proc, the unread bytes are compared with the pipe's size (Linux fills a pipe a page at a
    time, so a pipe of long lines can be full well before that: a write could still wait).
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return fd, None
    if stat.S_ISFIFO(mode):
        try:
            reopened = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return fd, _pipe_room(fd)
        if owned:
            os.close(fd)
        return reopened, None
    return fd, room_check(fd)


def _pipe_room(fd: int) -> Room:
    try:
        capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        capacity = 16 * _PAGE  # Linux's default
    return lambda size: capacity - _pipe_bytes(fd) >= size + 2 * _PAGE


def room_check(fd: int) -> Room | None:
    """How to tell, for a socket, whether a write would block; None for a file or a terminal
    (they take a line at once, or fail) and for a pipe (see never_waiting)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        # A stream socket is writable while a quarter of its send buffer is free: hundreds of
        # kilobytes for journald's, more than the longest line.
        return lambda size: bool(poller.poll(0))
    return None


def _pipe_bytes(fd: int) -> int:
    """Bytes in the pipe, not yet read."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
