"""Composing lifespans: each background duty is its own context manager; the app runs them all."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.api.reloading import Lifespan


def combine_lifespans(*lifespans: Lifespan) -> Lifespan:
    """Enter in order, exit in reverse order, also when one of them fails to start."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for each in lifespans:
                await stack.enter_async_context(each(app))
            yield

    return lifespan
