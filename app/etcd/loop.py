"""Running the publisher in the background: check at once, then every `interval`; after a
failure, retry with capped exponential backoff and jitter. A watch can cut a wait short.

etcd calls are blocking and run in worker threads, so the token endpoint never waits on etcd.
Sleep, randomness and the thread hop are parameters: unit tests drive the loop without time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random as random_module
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import anyio.to_thread

from app.errors import EtcdError
from app.etcd.publisher import Publisher
from app.settings_sections import EtcdSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
RunSync = Callable[[Callable[[], T]], Awaitable[T]]
WATCH_SLICE = 30.0  # longest single long-poll; the watch starts again from the newest index


def backoff_delay(failures: int, initial: float, cap: float, random: Callable[[], float]) -> float:
    """Seconds before the next attempt after `failures` (>= 1) failures in a row.

    Doubles from `initial` up to `cap`, then "equal jitter": a point between half and all of
    that step, so replicas restarted together spread out while the delay still grows.
    """
    step: float = min(cap, initial * 2.0 ** min(failures - 1, 60))
    return step / 2 + step / 2 * random()


async def in_worker_thread(function: Callable[[], T]) -> T:
    # abandon_on_cancel: shutdown need not wait for an etcd request (bounded by `timeout`).
    return await anyio.to_thread.run_sync(function, abandon_on_cancel=True)


class PublishLoop:
    """The publisher's schedule. `run()` until cancelled; `wake()` from any thread."""

    def __init__(
        self,
        publisher: Publisher,
        settings: EtcdSettings,
        *,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        run_sync: RunSync[bool] = in_worker_thread,
    ) -> None:
        self.publisher = publisher
        self._settings = settings
        self._sleep = sleep
        self._random = random
        self._run_sync = run_sync
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            await self.step()

    async def step(self) -> float:
        """One check and the wait after it; returns the delay that was chosen."""
        settings = self._settings
        failures = self.publisher.status.failures
        if await self._run_sync(self.publisher.check):
            delay = settings.interval
            if failures:  # the last line said it failed: say it no longer does
                log.info("etcd: published again after %d failed attempt(s)", failures)
        else:
            status = self.publisher.status
            delay = backoff_delay(
                status.failures, settings.retry_initial, settings.retry_max, self._random
            )
            # One line per attempt, no traceback: the endpoint, the cause and what comes next.
            if self.publisher.outrun:
                log.warning("etcd: %s; will look again in %.1f s", status.last_error, delay)
            else:
                log.warning(
                    "etcd: publishing failed (attempt %d): %s; next attempt in %.1f s",
                    status.failures,
                    status.last_error,
                    delay,
                )
        await self._pause(delay)
        return delay

    def shown_error(self) -> str | None:
        """The last error without where etcd is: the endpoints and the key."""
        error = self.publisher.status.last_error
        if error is None:
            return None
        return hide_where(error, self.publisher.backend.where, self._settings.endpoints)

    def wake(self) -> None:
        """Check now (thread-safe): the watch saw the key change."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to wake
                self._loop.call_soon_threadsafe(self._wake.set)

    async def _pause(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            self._wake.clear()


class KeyWatcher:
    """A daemon thread long-polling the key from the last good check; a change wakes the loop.

    On top of the periodic check, never instead of it: the loop checks every `interval`
    whether or not the watch works. A daemon thread, so a pending long-poll never delays exit.
    """

    def __init__(self, publisher: Publisher, notify: Callable[[], None], pause: float) -> None:
        self._publisher = publisher
        self._notify = notify
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        fired_at: int | None = None
        while not self._stop.is_set():
            index = self._publisher.status.index
            if index is None or index == fired_at:
                self._stop.wait(min(self._pause, 1.0))  # no good check yet, or not since firing
                continue
            if self._changed(index):
                fired_at = index
                log.info("etcd: %s changed; checking it now", self._publisher.backend.where)
                self._notify()

    def _changed(self, index: int) -> bool:
        wait = functools.partial(self._publisher.backend.wait_for_change, index)
        try:
            return wait(min(self._pause, WATCH_SLICE))
        except EtcdError as exc:
            log.debug("etcd: watch failed, the periodic check goes on: %s", exc)
            self._stop.wait(self._pause)
            return False


# urllib3's words for a connection: `HTTPConnection(host='etcd.lain', port=4001)`.
_CONNECTION = re.compile(r"HTTPS?Connection(?:Pool)?\(host=[^)]*\)")


def hide_where(error: str, where: str, endpoints: Sequence[str]) -> str:
    """`error` without the endpoints, their hosts and ports, and the key (`where`): for
    /readyz, which anyone may ask (the log has them)."""
    error = _CONNECTION.sub("etcd", error.removeprefix(f"{where}: "))
    for endpoint in endpoints:
        error = error.replace(f"{endpoint}: ", "").replace(endpoint, "etcd")
        parts = urlsplit(endpoint)
        if parts.hostname:  # only where it stands as a host: `etcd` is also a word here
            error = error.replace(f"'{parts.hostname}'", "its host")
            error = error.replace(parts.netloc, "etcd")
    return error
