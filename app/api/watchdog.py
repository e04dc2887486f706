"""A granian worker whose event loop has stopped is replaced (what gunicorn's `--timeout` does).

A worker serves all its requests on one event loop. When that loop stops (reading the state
file on a hung network disk, a deadlock, an endless loop, a frozen process), the worker still
takes its share of the connections, and each request it takes waits until its client gives
up, while /healthz and /readyz, answered by the other workers, say all is well. So:

- each worker's loop touches a file of its own in the workers' shared directory every second
  (`heartbeat_lifespan`);
- a thread of granian's main process looks at those files (`Watchdog`): a worker whose file
  has not changed for `worker_timeout` seconds is sent SIGUSR1, on which it writes every
  thread's Python stack to stderr (`dump_stacks_on_sigusr1`: where it is stuck), then SIGKILL
  a second later; granian starts another in its place, and the log says why.

How long a file stayed the same is measured on the main process's monotonic clock, never as
file time against the wall clock: a clock step must not kill every worker. A worker that has
not started serving (still loading its files) has no file yet and is not judged: it removes
any file its PID left from an earlier worker first. With one process (`workers: 1`) there is
no other process to watch it: there a liveness probe on /healthz, or systemd's restart, does
it. (A stderr whose reader stalled stops no loop: the server's log lines never wait for it,
app.api.server_logging.)
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from app.api.nonblocking import never_waiting
from app.api.reloading import Lifespan, running
from app.api.worker_status import shared_directory
from app.metrics import metrics

log = logging.getLogger(__name__)

BEAT_INTERVAL = 1.0  # seconds between two touches of a worker's file
KILL_AFTER = 1.0  # seconds a stuck worker has to write its stacks before SIGKILL
WATCH_GAP = 5.0  # seconds between two looks past which the watchdog itself was not running
_PREFIX = "alive-"
# Set in granian's main process by `watch_workers`, before it forks any worker: each worker
# inherits it. One process (`workers: 1`) has a shared directory too (the metrics'), but nobody
# to watch it: it does not beat.
_watched = False
# Held by the watchdog's thread while it counts; a fork waits for it (register_at_fork).
# prometheus-client guards its files with one lock of its own, not reset in a forked child:
# a worker forked while the thread held it would wait on it at its first count, forever.
_counting = threading.Lock()
_dump_fd: int | None = None  # where SIGUSR1's stacks go: stderr, never waiting when a pipe


def dump_stacks_on_sigusr1() -> None:
    """SIGUSR1 writes every thread's Python stack to stderr and the process goes on: how the
    watchdog shows where a stuck worker is, and a way for an operator to look at a live one
    (`kill -USR1 PID`). Without it SIGUSR1 would end the process.

    The stacks are written from the signal handler, in C, while every thread of the process
    waits. When stderr is a pipe whose reader has stalled, they go through a non-blocking
    descriptor of their own (app.api.nonblocking): what does not fit is lost, and the process
    goes on, instead of waiting, signal handler and all, for the reader to come back."""
    global _dump_fd  # one descriptor per process, inherited by forked workers
    if _dump_fd is None:
        _dump_fd, _ = never_waiting(2, owned=False)
    faulthandler.register(signal.SIGUSR1, file=_dump_fd, all_threads=True, chain=False)


def beat_path(directory: Path, pid: int) -> Path:
    return directory / f"{_PREFIX}{pid}"


def forget_own_beat() -> None:
    """In a new worker, before it loads its files (which may take long: a broken file is
    waited for): a file an earlier worker with the same PID left (killed before its lifespan
    ended) would make it judged, and killed, while it loads."""
    directory = shared_directory()
    if _watched and directory is not None:
        beat_path(directory, os.getpid()).unlink(missing_ok=True)


def heartbeat_lifespan() -> Lifespan:
    """While a worker's app runs: touch its file every BEAT_INTERVAL, from its event loop.
    Nothing without a watchdog (one process)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        directory = shared_directory()
        if not _watched or directory is None:
            yield
            return
        path = beat_path(directory, os.getpid())
        try:
            async with running(_beat(path)):
                yield
        finally:
            # A worker stopping (SIGTERM, a roll) may take `shutdown_timeout` to finish its
            # requests with its loop stopped: without a file it is not judged.
            path.unlink(missing_ok=True)

    return lifespan


async def _beat(path: Path) -> None:
    while True:
        # A missing directory (a tmp cleaner; the main process is remaking it) only means no
        # beat this time: the worker is then not judged, never killed for it.
        with contextlib.suppress(OSError):
            path.touch(mode=0o600)
        await asyncio.sleep(BEAT_INTERVAL)


def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Watched:
    """A worker as the watchdog sees it: granian's number for it (worker-N), its PID, and
    whether it still runs (not yet reaped: its PID is still its own)."""

    number: int
    pid: int
    alive: Callable[[], bool] = field(default=_always, compare=False)


@dataclass(frozen=True, slots=True)
class _Seen:
    mtime_ns: int  # the file's time when first seen so
    since: float  # the watchdog's monotonic time then


class Watchdog:
    """Looks at the workers' files each time `check` is called (every BEAT_INTERVAL) and
    replaces a worker whose file has stayed the same for the timeout."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[int, int], None] = os.kill,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self._directory = directory
        self._clock, self._send, self._pause = clock, send, pause
        self._seen: dict[int, _Seen] = {}  # by PID: the workers looked at last time
        self._last: float | None = None  # when `check` last ran

    def check(self, workers: Sequence[Watched], timeout: float) -> list[Watched]:
        """The workers found stuck this time, each replaced (see `replace`); timeout 0: off."""
        now = self._clock()
        if self._last is not None and now - self._last > WATCH_GAP:
            # This process did not look for a while: frozen with the workers (`docker pause`,
            # a cgroup freezer, a stopped process group) or starved. What the workers did
            # meanwhile was not watched, so every count starts again: else all of them would
            # be killed at once on waking up, their files unchanged since before the pause.
            self._seen = {}
        self._last = now
        seen: dict[int, _Seen] = {}
        stuck: list[Watched] = []
        for worker in workers:
            try:
                mtime = beat_path(self._directory, worker.pid).stat().st_mtime_ns
            except OSError:
                continue  # not serving yet, or stopping
            last = self._seen.get(worker.pid)
            if last is None or last.mtime_ns != mtime:
                last = _Seen(mtime, now)
            if timeout > 0 and now - last.since >= timeout:
                stuck.append(worker)
                self.replace(worker, now - last.since, timeout)
            else:
                seen[worker.pid] = last
        self._seen = seen
        self._forget_others({worker.pid for worker in workers})
        return stuck

    def _forget_others(self, pids: set[int]) -> None:
        """Remove the files of workers gone (killed before their lifespan ended) or being
        stopped (one still beating makes its file again)."""
        for path in self._directory.glob(f"{_PREFIX}*"):
            pid = path.name.removeprefix(_PREFIX)
            if pid.isdigit() and int(pid) not in pids:
                path.unlink(missing_ok=True)

    def replace(self, worker: Watched, silent: float, timeout: float) -> None:
        """SIGUSR1 (the worker writes its stacks), then SIGKILL; granian, seeing a worker exit
        that it did not stop, starts another. The log line comes last, below the stacks it
        points at."""
        try:
            self._send(worker.pid, signal.SIGUSR1)
            self._pause(KILL_AFTER)
            if not worker.alive():  # ended meanwhile (its PID may be another process's now)
                return
            with _counting:  # in the main process's own file, summed by every scrape
                metrics().stuck_workers.inc()
            self._send(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            return  # it ended meanwhile: granian replaces it as any worker that exits
        finally:
            beat_path(self._directory, worker.pid).unlink(missing_ok=True)
        log.error(
            "worker-%d (pid %d) had not run its event loop for %.0f s (worker_timeout: %g): "
            "killed, and another is started in its place; its threads' Python stacks, if it "
            "could write them, are just above",
            worker.number,
            worker.pid,
            silent,
            timeout,
        )


def watch_workers(
    workers: Callable[[], Sequence[Watched]], timeout: Callable[[], float]
) -> Watchdog | None:
    """Start the watchdog's thread in granian's main process; `workers` gives those running
    and not being stopped, `timeout` the `worker_timeout` in force (a SIGHUP may change it).
    None without a shared directory (nothing to watch)."""
    global _watched  # noqa: PLW0603 - inherited by the workers forked from now on
    directory = shared_directory()
    if directory is None:
        return None
    # Imported and made here, before granian forks any worker, never first in the thread: a
    # worker forked while the thread ran an import would wait on that import's lock forever
    # (seen: a replacement stuck at its first count, in app.metrics).
    metrics()
    if not _watched:  # once per process: a second `before` would wait on the first
        os.register_at_fork(
            before=_counting.acquire,
            after_in_parent=_counting.release,
            after_in_child=_counting.release,
        )
    _watched = True
    watchdog = Watchdog(directory)

    def watch() -> None:
        while True:
            time.sleep(BEAT_INTERVAL)
            try:
                watchdog.check(workers(), timeout())
            except Exception as exc:  # noqa: BLE001 - the watch must outlive one bad look
                log.error("worker watchdog: %s", exc)  # noqa: TRY400

    threading.Thread(target=watch, name="worker-watchdog", daemon=True).start()
    return watchdog
