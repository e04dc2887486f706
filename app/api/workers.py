"""A worker process's app (granian forks one per worker; `workers: 1` builds one in-process):
built once its files load, its start-up heap frozen out of the garbage collector, under the
configured CPU scheduling policy; and the check that a new worker would start at all.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

from app.api.app import create_app
from app.api.watchdog import dump_stacks_on_sigusr1, forget_own_beat
from app.errors import RegistryAuthError
from app.reload import RetryGate
from app.settings import Settings

log = logging.getLogger(__name__)


def worker_app(settings: Settings) -> Any:
    """What a granian worker serves. Runs in each forked worker (every worker builds its own
    app, service and caches), before granian starts the worker's I/O threads: they inherit its
    scheduling policy."""
    dump_stacks_on_sigusr1()  # the watchdog's way to show where a stuck worker is
    forget_own_beat()  # not judged while it loads its files
    use_worker_scheduling(settings.worker_scheduling)
    app = app_once_files_load(settings)
    freeze_startup_heap()
    return app


def freeze_startup_heap() -> None:
    """Take what exists once the app is built (modules, the app, the loaded files: ~93,000
    objects) out of the garbage collector's full passes. Such a pass otherwise walks all of it
    to find nothing: 19 ms of CPU each here, and 94-100 ms during which a worker under load
    answered nothing. Reference counting still frees these objects; only a cycle among them is
    never collected (the first copy of a reloaded file's state, at most: later copies are not
    frozen)."""
    gc.collect()  # first the start's garbage (in a worker also the main process's check app)
    gc.freeze()


def worker_problem(settings: Settings) -> str | None:
    """Why a worker started now would fail (a key ring, user file or ACL broken since the
    start), or None. A running worker keeps its last good copy of a broken file; a new one has
    none and exits, and granian stops the old worker it replaces all the same, then exits after
    a second crash: a roll of the workers onto a broken file would take the whole service down."""
    try:
        app = create_app(settings)
    except RegistryAuthError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever it is, such a worker would not start
        return type(exc).__name__
    discard_app(app)
    return None


def discard_app(app: Any) -> None:
    """Close what building an app only to check it opened: the audit log's file (every worker
    forked later inherited one more descriptor per check) and the backends' clients."""
    app.state.audit.close()
    asyncio.run(app.state.service.aclose())


def app_once_files_load(settings: Settings) -> Any:
    """A worker's app. One that replaces a worker that died while a file is broken waits for
    the file instead of exiting (granian would take a second exit in a row for a crash loop and
    stop every worker): it looks at the files every `reload_interval` and tries again when one
    changed, or a minute after its last try (RetryGate)."""
    problem = None
    gate = RetryGate(settings)  # before the first try: a fix made during it is seen
    while True:
        try:
            return create_app(settings)
        except RegistryAuthError as exc:
            if str(exc) != problem:
                problem = str(exc)
                log.error("worker %d waits for its files to load: %s", os.getpid(), problem)  # noqa: TRY400
        time.sleep(settings.reload_interval)
        while not gate.worth_trying():
            time.sleep(settings.reload_interval)


def use_worker_scheduling(policy: str) -> None:
    """`batch`: this thread, and every thread it starts from now on, runs under SCHED_BATCH.

    A granian worker is a Python thread (the app, signing inline) beside Rust I/O threads.
    Under full load, every time an I/O thread woke up it interrupted the Python thread in the
    middle of a token, and the two then passed the GIL back and forth: ~4.7 context switches
    per fresh token. A SCHED_BATCH thread waking up waits for the running one's time slice
    instead (the kernel still shares the cores fairly), so the I/O thread takes the requests
    that arrived in between in one go: ~1 context switch per token, ~10% more tokens/s
    (docs/performance.md). When a core is idle nothing waits. Best effort: where the policy
    is not available the worker runs with the kernel's default and says so.
    """
    if policy != "batch":
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.warning("worker_scheduling: batch is not available here (%s); using the default", exc)
