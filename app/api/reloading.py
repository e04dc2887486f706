"""Running hot reload inside the server: a polling task, and SIGHUP to reload at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from app.early_signals import take_early_hangup
from app.reload import Reloadable

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def reload_lifespan(
    reloadables: Sequence[Reloadable[Any]],
    interval: float,
    on_hangup: Callable[[], None] | None = None,
) -> Lifespan:
    """While the app runs: check the watched files every `interval` seconds; SIGHUP forces,
    then calls `on_hangup` (in a worker thread)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        hangup = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, hangup.set)
        if take_early_hangup():  # one that came while the server started
            hangup.set()
        try:
            async with running(_watch(reloadables, interval, hangup, on_hangup)):
                yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
                # Not back to the default action, which ends the process: a SIGHUP while it
                # shuts down would make a clean stop exit 129.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

    return lifespan


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, object]) -> AsyncIterator[None]:
    """`work` as a background task while the block runs; cancelled and awaited after it."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(
    reloadables: Sequence[Reloadable[Any]],
    interval: float,
    hangup: asyncio.Event,
    on_hangup: Callable[[], None] | None,
) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hangup.wait(), timeout=interval)
        forced = hangup.is_set()
        hangup.clear()
        if forced:
            log.info("SIGHUP: reloading every watched file")
        for item in reloadables:
            # Loading parses keys and hashes a dummy password: keep it off the event loop.
            if forced:
                await anyio.to_thread.run_sync(item.reload)
            else:
                await anyio.to_thread.run_sync(item.reload_if_changed)
        if forced and on_hangup is not None:
            try:
                await anyio.to_thread.run_sync(on_hangup)
            except Exception as exc:  # noqa: BLE001 - the watch must go on reloading files
                log.error("SIGHUP: %s", type(exc).__name__)  # noqa: TRY400
