"""Bounded thread pools for CPU-bound work that releases the GIL: bcrypt checks, RSA signing.

Both release the GIL, so threads use every core without stalling the event loop. A pool is
bounded (one thread per CPU by default): a storm of distinct logins queues here instead of
starting dozens of CPU-bound threads that would fight the event loop for the cores. The
password pool's threads also run at a lower scheduling priority (Linux: `nice` is per thread),
so /healthz and cached logins on the event loop stay fast while bcrypt still takes every idle
cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from app.cpus import available_cpus

T = TypeVar("T")
NICENESS = 10  # ~10x less CPU share than the event loop when both want a core; all idle cycles


def _lower_priority() -> None:
    # Best effort: where a thread's niceness cannot be set, the pool still works.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


def default_threads() -> int:
    """One thread per CPU this process may use (its cores, or its cgroup CPU limit if lower)."""
    return available_cpus()


class WorkerPool:
    """A bounded thread pool for blocking, CPU-bound calls. Threads start on first use, and a
    pool shut down (an app's lifespan ended) starts afresh if it is used again."""

    def __init__(
        self, name: str, threads: int | None = None, *, lower_priority: bool = False
    ) -> None:
        self.threads = threads or default_threads()
        self._name = name
        self._initializer = _lower_priority if lower_priority else None
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads,
                thread_name_prefix=self._name,
                initializer=self._initializer,
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def shutdown(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        self.shutdown()
