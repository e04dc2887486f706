"""Composing lifespans: each background duty is its own context manager; the app runs them all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from app.api.reloading import Lifespan, running
from app.state.attempts import LoginThrottle

log = logging.getLogger(__name__)


def combine_lifespans(*lifespans: Lifespan) -> Lifespan:
    """Enter in order, exit in reverse order, also when one of them fails to start."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for each in lifespans:
                await stack.enter_async_context(each(app))
            yield

    return lifespan


def polling_lifespan(interval: float, *checks: Callable[[], object]) -> Lifespan:
    """While the app runs: call every check each `interval` seconds, on the event loop (so a
    check must be quick, a stat or two). A check that fails is logged and tried again next time.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not checks:
            yield
            return
        async with running(_poll(interval, checks)):
            yield

    return lifespan


async def _poll(interval: float, checks: tuple[Callable[[], object], ...]) -> None:
    while True:
        await asyncio.sleep(interval)
        for check in checks:
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - one failed poll must not end the polling
                log.error("periodic check %s failed: %s", _name(check), exc)  # noqa: TRY400


def _name(check: Callable[[], object]) -> str:
    return getattr(check, "__qualname__", None) or repr(check)


def hand_back_lifespan(throttle: LoginThrottle | None, interval: float = 1.0) -> Lifespan:
    """While failures counted in memory during a state store outage wait to go back to it:
    offered every `interval` seconds, not only at the next login this process answers. Until
    then `logins status` did not show them, and a `logins reset` made after the store came
    back was undone by them at that login."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if throttle is None:
            yield
            return
        async with running(_hand_back(throttle, interval)):
            yield

    return lifespan


async def _hand_back(throttle: LoginThrottle, interval: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        if throttle.holds_failures():  # an attribute: the rest of the time, nothing to do
            done: asyncio.Future[None] = loop.create_future()
            # A daemon thread of its own, not anyio's (which the interpreter waits for at
            # exit): a try at a hung etcd held the shutdown for its timeout.
            threading.Thread(
                target=_hand_back_now, args=(throttle, loop, done), name="hand-back", daemon=True
            ).start()
            await done


def _hand_back_now(
    throttle: LoginThrottle, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]
) -> None:
    try:
        throttle.hand_back()
    except Exception as exc:  # noqa: BLE001 - tried again next time
        log.error("handing back failed logins counted in memory: %s", exc)  # noqa: TRY400
    finally:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_finish, done)


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():  # cancelled with the app
        done.set_result(None)
