"""The worker watchdog: each worker's loop touches a file of its own; the main process replaces
a worker whose file stayed the same for `worker_timeout`, judged on its own monotonic clock."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from app.api import watchdog
from app.api.metrics_http import MULTIPROC_ENV
from app.api.watchdog import (
    KILL_AFTER,
    Watchdog,
    Watched,
    beat_path,
    forget_own_beat,
    heartbeat_lifespan,
)
from app.errors import ConfigError
from app.settings import load_settings

A, B = Watched(1, 101), Watched(2, 102)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """What the watchdog did to the processes, in order: signals sent and pauses made."""

    def __init__(self, gone: set[int] | None = None) -> None:
        self.done: list[tuple[str, int | float]] = []
        self.gone = gone or set()
        self.counted_at_kill = -1.0  # the counter when SIGKILL went out

    def send(self, pid: int, signum: int) -> None:
        if pid in self.gone:
            raise ProcessLookupError(pid)
        self.done.append((signal.Signals(signum).name, pid))
        if signum == signal.SIGKILL:
            self.counted_at_kill = _replaced()

    def pause(self, seconds: float) -> None:
        self.done.append(("pause", seconds))


def _beat(directory: Path, worker: Watched, mtime: int) -> None:
    path = beat_path(directory, worker.pid)
    path.touch()
    os.utime(path, ns=(mtime, mtime))


def _watchdog(directory: Path, clock: Clock, recorder: Recorder) -> Watchdog:
    return Watchdog(directory, clock=clock, send=recorder.send, pause=recorder.pause)


def test_a_worker_whose_file_stops_changing_is_replaced_the_others_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, recorder = Clock(), Recorder()
    dog = _watchdog(tmp_path, clock, recorder)
    replaced_before = _replaced()
    for second in range(40):
        clock.now = 1000.0 + second
        _beat(tmp_path, A, 10**9 * second)  # A's loop runs: its file changes every second
        if second < 5:
            _beat(tmp_path, B, 10**9 * second)  # B's stops after 5 s (last beat at second 4)
        with caplog.at_level(logging.ERROR, logger="app.api.watchdog"):
            stuck = dog.check([A, B], timeout=30)
        if second < 34:
            assert stuck == [], second
            assert recorder.done == []
        elif second == 34:
            assert stuck == [B]
    # B once: its file went with it.
    assert recorder.done == [("SIGUSR1", B.pid), ("pause", KILL_AFTER), ("SIGKILL", B.pid)]
    assert not beat_path(tmp_path, B.pid).exists()
    assert _replaced() == replaced_before + 1
    # Counted before the kill: granian forks the replacement once the worker is gone, and a
    # fork while the count held prometheus-client's lock would leave it stuck.
    assert recorder.counted_at_kill == replaced_before + 1
    assert caplog.messages == [
        "worker-2 (pid 102) had not run its event loop for 30 s (worker_timeout: 30): killed, "
        "and another is started in its place; its threads' Python stacks, if it could write "
        "them, are just above"
    ]


def _replaced() -> float:
    from app.metrics import metrics  # noqa: PLC0415

    metrics()  # the counters exist from the first use on
    return REGISTRY.get_sample_value("registry_auth_stuck_workers_total") or 0.0


def test_judged_by_how_long_the_file_stayed_the_same_not_by_its_time(tmp_path: Path) -> None:
    """A file time far behind or ahead of the clock (a clock step, an NTP correction) is not a
    stuck worker: only a file that has not changed for the timeout, as the watchdog saw it."""
    clock, recorder = Clock(), Recorder()
    dog = _watchdog(tmp_path, clock, recorder)
    _beat(tmp_path, A, 0)  # 1970
    _beat(tmp_path, B, 10**19)  # 2286
    for _ in range(99):
        assert dog.check([A, B], timeout=10) == []
        clock.now += 0.1
    assert dog.check([A, B], timeout=10) == []
    clock.now += 0.1
    assert dog.check([A, B], timeout=10) == [A, B]


def test_a_pause_of_the_whole_service_kills_nobody(tmp_path: Path) -> None:
    """`docker pause` freezes the main process with the workers: on waking up their files have
    not changed for as long as the pause lasted, and they beat again within a second."""
    clock, recorder = Clock(), Recorder()
    dog = _watchdog(tmp_path, clock, recorder)
    _beat(tmp_path, A, 5)
    assert dog.check([A], timeout=10) == []
    clock.now += 600  # frozen for ten minutes
    assert dog.check([A], timeout=10) == []
    clock.now += 5  # the watchdog looks every second; no beat since the pause
    assert dog.check([A], timeout=10) == []
    clock.now += 5
    assert dog.check([A], timeout=10) == [A]  # ten seconds of watching without a beat


def test_not_judged_without_a_file_nor_with_the_timeout_off(tmp_path: Path) -> None:
    clock, recorder = Clock(), Recorder()
    dog = _watchdog(tmp_path, clock, recorder)
    _beat(tmp_path, A, 5)  # B has no file: still loading its files, or stopping
    for _ in range(3600):
        assert dog.check([A, B], timeout=0) == []  # 0: off
        clock.now += 1
    assert dog.check([A, B], timeout=3600) == [A]  # timed from the first look, an hour ago
    assert recorder.done[0] == ("SIGUSR1", A.pid)


@pytest.mark.parametrize(
    ("when", "signals"),
    [
        ("before SIGUSR1", []),
        ("during the pause", [("SIGUSR1", A.pid), ("pause", KILL_AFTER)]),
    ],
)
def test_a_worker_that_ended_meanwhile_is_left_to_granian(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, when: str, signals: list[object]
) -> None:
    """It may end, and be reaped (its PID free for another process), before the watchdog's
    SIGUSR1 or between that and SIGKILL: no SIGKILL then, nothing counted, no line."""
    before = when == "before SIGUSR1"
    clock, recorder = Clock(), Recorder(gone={A.pid} if before else set())
    dog = _watchdog(tmp_path, clock, recorder)
    replaced_before = _replaced()
    ended = A if before else Watched(A.number, A.pid, alive=lambda: False)
    _beat(tmp_path, ended, 5)
    for _ in range(10):
        dog.check([ended], timeout=10)
        clock.now += 1
    with caplog.at_level(logging.ERROR, logger="app.api.watchdog"):
        assert dog.check([ended], timeout=10) == [ended]
    assert recorder.done == signals
    assert (caplog.messages, _replaced()) == ([], replaced_before)
    assert not beat_path(tmp_path, A.pid).exists()


def test_files_of_workers_gone_are_removed_and_a_new_worker_removes_its_pids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed before its lifespan ended leaves its file. The watchdog removes files of
    PIDs it does not watch; a new worker that got such a PID removes it before it loads its
    files (else it would be judged, and killed, while it loads: that may take long)."""
    clock, recorder = Clock(), Recorder()
    dog = _watchdog(tmp_path, clock, recorder)
    _beat(tmp_path, A, 5)
    _beat(tmp_path, B, 5)
    assert dog.check([A], timeout=10) == []
    assert not beat_path(tmp_path, B.pid).exists()
    assert beat_path(tmp_path, A.pid).exists()

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(watchdog, "_watched", True)
    mine = beat_path(tmp_path, os.getpid())
    mine.touch()
    forget_own_beat()
    assert not mine.exists()


def test_a_fork_waits_for_a_count_in_progress(tmp_path: Path) -> None:
    """prometheus-client's lock is not reset in a forked child: a worker forked while the
    watchdog's thread counted would wait on it at its first count, forever. So a fork waits
    until the count is done, and the child counts freely."""
    program = textwrap.dedent(
        f"""
        import os, threading, time
        os.environ["{MULTIPROC_ENV}"] = {str(tmp_path)!r}
        from app.api import watchdog
        from app.metrics import metrics

        watchdog.watch_workers(lambda: [], lambda: 0)
        held = threading.Event()

        def count_slowly():
            with watchdog._counting:
                held.set()
                time.sleep(0.5)

        threading.Thread(target=count_slowly).start()
        held.wait()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            metrics().stuck_workers.inc()  # would hang if forked in the middle of a count
            os._exit(0)
        waited = time.monotonic() - started
        _, status = os.waitpid(pid, 0)
        print(round(waited, 1), os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    waited, child_status = done.stdout.split()
    assert float(waited) >= 0.3, done.stdout  # the fork waited for the count
    assert child_status == "0"


def test_a_worker_beats_while_its_app_runs_and_removes_its_file_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(watchdog, "_watched", True)  # as a worker forked by granian
    monkeypatch.setattr(watchdog, "BEAT_INTERVAL", 0.01)
    path = beat_path(tmp_path, os.getpid())

    async def serve() -> set[int]:
        times = set()
        async with heartbeat_lifespan()(FastAPI()):
            for _ in range(5):
                await asyncio.sleep(0.03)
                times.add(path.stat().st_mtime_ns)
            assert path.stat().st_mode & 0o777 == 0o600
        return times

    assert len(asyncio.run(serve())) >= 3  # touched again and again
    assert not path.exists()


def test_one_process_does_not_beat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`workers: 1` has the metrics' directory too, but no watchdog."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(watchdog, "_watched", False)

    async def serve() -> None:
        async with heartbeat_lifespan()(FastAPI()):
            await asyncio.sleep(0.01)

    asyncio.run(serve())
    assert list(tmp_path.iterdir()) == []


def test_sigusr1_writes_every_threads_stack_and_the_process_goes_on() -> None:
    program = textwrap.dedent(
        """
        import os, signal, threading, time
        from app.api.watchdog import dump_stacks_on_sigusr1

        def waiting_for_work():
            time.sleep(5)

        dump_stacks_on_sigusr1()
        threading.Thread(target=waiting_for_work, daemon=True).start()
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR1)
        print("still running")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout) == (0, "still running\n"), done.stderr
    assert "(most recent call first):" in done.stderr
    assert "in waiting_for_work" in done.stderr  # the other thread's stack too


def test_sigusr1_with_a_stalled_stderr_does_not_stop_the_process() -> None:
    """stderr a pipe nobody reads, already full: the stacks are lost, the process goes on
    (a blocking write in the signal handler would hold it until the reader came back)."""
    program = textwrap.dedent(
        """
        import os, signal
        from app.api.watchdog import dump_stacks_on_sigusr1

        filler = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(filler, b"x" * 4096)
        except BlockingIOError:
            pass  # the pipe is full
        dump_stacks_on_sigusr1()
        os.kill(os.getpid(), signal.SIGUSR1)
        print("still running", flush=True)
        os._exit(0)
        """
    )
    unread, stderr = os.pipe()
    try:
        with subprocess.Popen(
            [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=stderr, text=True
        ) as child:
            os.close(stderr)
            try:
                out, _ = child.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                pytest.fail("SIGUSR1 waited for stderr's reader")
    finally:
        os.close(unread)
    assert (child.returncode, out) == (0, "still running\n")


@pytest.mark.parametrize("value", [0.5, 5, 9.9])
def test_worker_timeout_is_off_or_at_least_ten_seconds(value: float) -> None:
    with pytest.raises(ConfigError, match=r"worker_timeout: must be 0 \(off\) or at least 10"):
        load_settings(overrides={"worker_timeout": value})
    assert load_settings(overrides={"worker_timeout": 0}).worker_timeout == 0
    assert load_settings(overrides={}).worker_timeout == 30
