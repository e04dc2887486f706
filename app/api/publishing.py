"""Publishing to etcd while the server runs: the loop as a task, the watch as a thread, and
the status for /readyz. etcd trouble never reaches the token endpoint (protocol.md §7)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from app.api import worker_status
from app.api.reloading import Lifespan, running
from app.etcd.backend import open_backend
from app.etcd.loop import KeyWatcher, PublishLoop, in_worker_thread
from app.etcd.publisher import Publisher, PublishStatus
from app.etcd.record import desired_record
from app.settings import Settings

log = logging.getLogger(__name__)


def build_publish_loop(settings: Settings) -> PublishLoop | None:
    """None without an `etcd` section: the service then runs standalone."""
    if settings.etcd is None:
        return None
    superseded = functools.partial(worker_status.replaced_after, worker_status.generation())
    publisher = Publisher(
        open_backend(settings.etcd), desired_record(settings), superseded=superseded
    )
    return PublishLoop(publisher, settings.etcd)


def publish_lifespan(loop: PublishLoop | None, settings: Settings) -> Lifespan:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if loop is None or settings.etcd is None:
            log.info(
                "etcd: not configured, not publishing realm/issuer/service; "
                "the registry's auth: token: block must be set by hand"
            )
            yield
            return
        etcd = settings.etcd
        log.info("etcd: publishing to %s every %.0f s", loop.publisher.backend.where, etcd.interval)
        watcher = KeyWatcher(loop.publisher, loop.wake, etcd.interval) if etcd.watch else None
        try:
            async with running(loop.run()):
                if watcher is not None:
                    watcher.start()
                try:
                    yield
                finally:
                    if watcher is not None:
                        watcher.stop()
        finally:
            # Off by default: the registry reads the key only when it starts, so a key deleted
            # now would leave a registry restarted during our downtime without token auth.
            if etcd.delete_on_shutdown:
                await in_worker_thread(loop.publisher.unpublish)
            loop.publisher.backend.close()

    return lifespan


def keeping_the_key(settings: Settings) -> Settings:
    """`settings` for one of several worker processes: it does not delete the etcd key when it
    stops (the main process does, when the service stops: unpublish_at_shutdown)."""
    if settings.etcd is None or not settings.etcd.delete_on_shutdown:
        return settings
    etcd = settings.etcd.model_copy(update={"delete_on_shutdown": False})
    return settings.model_copy(update={"etcd": etcd})


def unpublish_at_shutdown(settings: Settings) -> None:
    """Delete the etcd key if it still holds our record, when `etcd.delete_on_shutdown` asks."""
    if settings.etcd is None or not settings.etcd.delete_on_shutdown:
        return
    publisher = Publisher(open_backend(settings.etcd), desired_record(settings))
    try:
        publisher.unpublish()
    finally:
        publisher.backend.close()


def etcd_status(loop: PublishLoop | None) -> dict[str, Any]:
    """The `etcd` part of /readyz."""
    if loop is None:
        return {"enabled": False, **PublishStatus().as_dict()}
    # Anyone may ask /readyz: what went wrong, not where etcd is (the log says it).
    return {"enabled": True, **loop.publisher.status.as_dict(), "last_error": loop.shown_error()}
