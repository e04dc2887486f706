"""granian's main process: N forked worker processes, each running the whole app (its own
lifespan, so file-reload polling and the etcd publisher run once per worker, harmlessly: both
are idempotent; its own caches). SIGTERM/SIGINT stop gracefully (each worker's lifespan
shutdown runs); SIGHUP reads the config again (app.api.config_reread) and restarts the workers
on it, one by one, only when a new worker can start (app.api.workers.worker_problem); a renewed
TLS pair restarts them the same way (watch_tls_for_granian).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from app.api import worker_status
from app.api.app import create_app
from app.api.config_refusal import set_config_refused
from app.api.config_reread import Reread, next_settings
from app.api.metrics_http import use_multiprocess_dir
from app.api.publishing import keeping_the_key, unpublish_at_shutdown
from app.api.server import ServerOptions
from app.api.server_logging import granian_logging
from app.api.tls import ReloadingTLS
from app.api.tls_copies import PairCopies
from app.api.watchdog import Watched, dump_stacks_on_sigusr1, watch_workers
from app.api.worker_status import share_among_workers
from app.api.workers import discard_app, freeze_startup_heap, worker_app, worker_problem
from app.early_signals import take_early_hangup
from app.reload import RetryGate
from app.settings import Settings

log = logging.getLogger(__name__)


def run_granian(settings: Settings, options: ServerOptions, reread: Reread | None = None) -> None:
    from granian.constants import HTTPModes, Interfaces  # noqa: PLC0415
    from granian.log import LogLevels  # noqa: PLC0415
    from granian.server import MPServer  # noqa: PLC0415  # what granian.Server is with the GIL

    # Fail here, in one process with one clear line, not in every worker.
    discard_app(create_app(settings))
    use_multiprocess_dir()  # before the fork: every worker writes its counters there
    set_config_refused(False)  # an operator's directory kept from a run before: this one loaded

    running = [settings]  # what new workers are built from: SIGHUP may replace it
    lock = threading.Lock()  # the TLS watch thread and granian's main loop both decide rolls
    # `tls` itself only changes with a restart; granian is given copies of the pair in force.
    tls = ReloadingTLS(settings.tls) if settings.tls is not None else None
    copies = PairCopies(tls.pair) if tls is not None else None

    class CheckedRollServer(MPServer):
        hangup = False  # a SIGHUP not yet handled: read the config again
        asked = 0  # rolls asked for (SIGHUP, the TLS watch): none asked during a reload is lost

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.wake = WakeRelay(self.main_loop_interrupt)

        def startup(self, spawn_target: Any, target_loader: Any) -> None:
            super().startup(spawn_target, target_loader)  # type: ignore[no-untyped-call]
            if take_early_hangup():  # one that came before granian set its handlers
                self.signal_handler_reload()

        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            self.interrupt_signal = True
            self.wake.wake()

        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            # Flags only: the config is read and checked on granian's main loop (_reload),
            # one reload at a time (a second SIGHUP arriving meanwhile waits its turn).
            self.hangup = True
            self.asked += 1
            self.reload_signal = True
            self.wake.wake()

        def use_pair(self, copies: PairCopies) -> None:
            """Workers started from now on load this pair (granian's own context: the paths
            it hands every new worker, resolved as they are now)."""
            from granian.constants import SSLProtocols  # noqa: PLC0415

            tls12 = SSLProtocols.tls12
            self.build_ssl_context(copies.cert, copies.key, None, tls12, None, [], False)

        def roll_workers(self) -> str | None:
            """Restart the workers one by one on the settings they run on, as SIGHUP does,
            only when a new one can start; else why not (see worker_problem). From any thread
            (the TLS watch): granian's main loop does the restart."""
            with lock:
                problem = worker_problem(running[0])
            if problem is None:
                self.asked += 1
                self.reload_signal = True
                self.wake.wake()
            return problem

        def _respawn_workers(
            self, workers: list[int], spawn_target: Any, target_loader: Any, delay: float = 0
        ) -> None:
            """A roll, one worker at a time, that ends once SIGTERM comes: granian went on
            starting and swapping every worker first (each `respawn_interval` and a drain), so
            the shutdown's own drain could begin past a supervisor's grace period."""
            for idx in workers:
                if self.interrupt_signal:
                    log.info(
                        "SIGTERM during a roll: the workers not yet restarted stop as they are"
                    )
                    break
                super()._respawn_workers([idx], spawn_target, target_loader, delay)
            if self.interrupt_signal:
                # granian clears its wake-up just before replacing a dead worker: a SIGTERM that
                # came in between left the flag up and the loop asleep for good. Wake it.
                self.main_loop_interrupt.set()

        def _reload(self, spawn_target: Any, target_loader: Any) -> Any:
            asked, hangup = self.asked, self.hangup
            if hangup:  # cleared only when seen: one arriving from here on is seen next time
                self.hangup = False
            with lock:
                go = next_settings(running, reread if hangup else None)
            result = None
            if go and not self.interrupt_signal:  # a SIGTERM meanwhile: no roll to stop at once
                worker_status.next_generation()  # the old workers leave the etcd key to the new
                result = super()._reload(spawn_target, target_loader)  # type: ignore[no-untyped-call]
                # A worker that died during the roll was replaced by it: granian would take
                # the replacement, started moments ago, for a crash loop and exit.
                self.interrupt_children[:] = [
                    idx
                    for idx in self.interrupt_children
                    if idx >= len(self.wrks) or not self.wrks[idx].is_alive()
                ]
            else:
                self.reload_signal = False
                self.main_loop_interrupt.clear()
            # granian clears its flags as a reload starts: a SIGHUP or a certificate roll (or
            # SIGTERM, or a worker dying) that came in while the config was being checked
            # would wait for the next signal. Whatever is pending wakes the loop again.
            if self.hangup or self.asked != asked:
                self.reload_signal = True
            # The wake-up of a worker that died during the roll is still set, and nothing is
            # left to do for it: kept, granian's loop would spin on it, a core at 100% (and a
            # SIGTERM landing while it held the event's lock hung the main process). Cleared
            # before the flags are read: whoever raises a flag wakes the loop after it.
            self.main_loop_interrupt.clear()
            pending = (self.interrupt_signal, self.interrupt_children, self.reload_signal)
            if any(pending) or self.lifetime_signal or self.rss_signal:
                self.main_loop_interrupt.set()
            return result

    server = CheckedRollServer(
        "registry-auth",  # a label only: the app comes from the loader below
        address=options.host,
        port=options.port,
        interface=Interfaces.ASGI,
        # HTTP/1.1 only, as uvicorn: granian's default also spoke HTTP/2, cleartext too (h2c),
        # where a header block left unfinished stayed open past limits.header_timeout.
        http=HTTPModes.http1,
        workers=options.workers,
        websockets=False,
        log_level=LogLevels.info,
        log_dictconfig=granian_logging(),
        respawn_failed_workers=True,
        # A worker told to stop (SIGTERM, a roll) that still has requests running after this
        # is killed: a stuck backend cannot hold a deploy forever.
        workers_kill_timeout=settings.shutdown_timeout,
        http1_settings=_granian_http1(settings),
        **_granian_tls(copies),
    )

    if tls is not None and copies is not None:
        watch_tls_for_granian(lambda: running[0], tls, copies, server)
    dump_stacks_on_sigusr1()  # inherited by the workers; SIGUSR1 no longer ends this process

    def watched() -> list[Watched]:
        """The workers to judge: running, and not being stopped by granian (a roll, SIGTERM)."""
        if server.interrupt_signal:
            return []
        return [
            Watched(worker.idx + 1, worker.inner.pid, worker.is_alive)
            for worker in list(server.wrks)
            if not worker.interrupt_by_parent and worker.is_alive()  # type: ignore[no-untyped-call]
        ]

    share_among_workers()  # each worker's /readyz covers the others
    watch_workers(watched, lambda: running[0].worker_timeout)
    # Before the fork. A worker's first collection (worker_app) then leaves the objects it
    # inherits alone: marking them would write to, and so copy, every page it shares with this
    # process. Measured with two workers after 3,000 tokens: 155 MiB PSS for the three
    # processes before, 117 MiB after.
    freeze_startup_heap()
    # Each worker is forked from this process: it builds its app from what `running` holds
    # when it starts.
    server.serve(target_loader=lambda _label: _load_worker(running[0], copies))
    # Returned: a shutdown, every worker stopped (a failed one exits instead).
    unpublish_at_shutdown(running[0])


def _load_worker(settings: Settings, copies: PairCopies | None) -> Any:
    """In a new worker, before granian reads the pair: the copies are there. A worker never
    deletes the etcd key as it stops (`etcd.delete_on_shutdown`): a worker replaced by a roll
    or the watchdog would take it away from under a running service (a registry restarted then
    would start without token auth). The main process deletes it, once all have stopped."""
    if copies is not None:
        copies.ensure()
    return worker_app(keeping_the_key(settings))


class PairUser(Protocol):
    """The server, as the certificate watch sees it."""

    def use_pair(self, copies: PairCopies) -> None: ...

    def roll_workers(self) -> str | None: ...


class WakeRelay:
    """Wakes granian's main loop on behalf of a signal handler, from a thread of its own.

    The handler runs on the main thread between two bytecodes, possibly while that thread holds
    the lock inside the main loop's Event (in wait or clear): setting the Event from the
    handler would wait for that lock forever. SimpleQueue.put is safe in a signal handler (it
    takes no lock a handler could interrupt), and the relay thread sets the Event once the
    main thread lets go of it.
    """

    def __init__(self, event: threading.Event) -> None:
        self._queue: queue.SimpleQueue[None] = queue.SimpleQueue()
        threading.Thread(target=self._relay, args=(event,), name="wake-relay", daemon=True).start()

    def wake(self) -> None:
        self._queue.put(None)

    def _relay(self, event: threading.Event) -> None:
        while True:
            self._queue.get()
            event.set()


def watch_tls_for_granian(
    current: Callable[[], Settings], tls: ReloadingTLS, copies: PairCopies, server: PairUser
) -> threading.Thread:
    """granian loads the certificate when a worker starts. So a thread of the main process polls
    the pair every `reload_interval` (CertificateWatch). `current` gives the settings the
    workers run on now (a SIGHUP may change `reload_interval`)."""
    start = current()
    poll = CertificateWatch(tls, copies, server)

    def watch() -> None:
        watched = start
        gate = RetryGate(watched)
        while True:
            _sleep_interval(current)
            if current() is not watched:
                watched = current()
                gate = RetryGate(watched)
            poll(gate)

    thread = threading.Thread(target=watch, name="tls-watch", daemon=True)
    thread.start()
    return thread


class CertificateWatch:
    """One poll of the pair: when it changed and the new pair loads (checked in a scratch
    context first: a half-written or mismatched pair is logged and ignored), its copies are
    written, granian is told, and it restarts the workers one by one, each new one started
    before the old one stops, as on an operator's SIGHUP. While a new worker could not start,
    the roll waits (tried again when `gate` says the files changed); while the copies cannot be
    written (a full /tmp), the new pair waits, tried at every poll: it is never dropped."""

    def __init__(self, tls: ReloadingTLS, copies: PairCopies, server: PairUser) -> None:
        self._tls, self._copies, self._server = tls, copies, server
        self._waiting = False  # a new pair whose roll waits for the other files to load again
        self._pending = False  # a new pair loaded, not yet handed to granian

    def __call__(self, gate: RetryGate) -> None:
        try:
            self._copies.ensure()
            self._pending = self._tls.reload_if_changed() or self._pending
            changed = self._pending
            if changed:
                self._copies.replace(self._tls.pair)
                self._server.use_pair(self._copies)
                self._pending = False
        except Exception as exc:  # noqa: BLE001 - the watch must outlive one bad poll
            log.error("TLS certificate check failed: %s", exc)  # noqa: TRY400
            return
        if changed:
            gate.trying_now()
        elif not (self._waiting and gate.worth_trying()):
            return
        problem = self._server.roll_workers()
        if problem is not None:
            if not self._waiting:
                log.error("the new TLS certificate waits for the workers' files: %s", problem)
            self._waiting = True
            return
        self._waiting = False
        log.info("restarting the workers one by one for the new TLS certificate")


def _sleep_interval(current: Callable[[], Settings]) -> None:
    """Sleep `reload_interval` of the settings in force, in steps of at most a second: a
    SIGHUP that shortens it from minutes to seconds takes effect within one."""
    started = time.monotonic()
    while (left := current().reload_interval - (time.monotonic() - started)) > 0:
        time.sleep(min(left, 1.0))


def _granian_http1(settings: Settings) -> Any:
    from granian.http import HTTP1Settings  # noqa: PLC0415

    # The same cut for slow clients as uvicorn's request timeout (limits.header_timeout).
    return HTTP1Settings(header_read_timeout=int(settings.limits.header_timeout * 1000))


def _granian_tls(copies: PairCopies | None) -> dict[str, Any]:
    """granian loads the certificate from these paths when a worker starts; a renewed pair
    restarts the workers (watch_tls_for_granian). uvicorn (one worker) reloads it live."""
    if copies is None:
        return {}
    from granian.constants import SSLProtocols  # noqa: PLC0415

    return {
        "ssl_cert": copies.cert,
        "ssl_key": copies.key,
        "ssl_protocol_min": SSLProtocols.tls12,  # what the docker and containerd clients speak
    }
