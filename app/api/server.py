"""Running the app: uvicorn in this process (`workers: 1`), or granian with N worker processes.

Why granian for several workers: measured on this project's 2-core machines, uvicorn's
`--workers 2` now and then left every keep-alive connection on one worker (the kernel hands a
shared listening socket's connections to whichever process accepts first), while granian spread
them evenly; its HTTP layer is also Rust, not Python (see the README's Performance section).
Each worker is a forked process running the whole app: its own lifespan, so file-reload polling
and the etcd publisher run once per worker (harmless: both are idempotent), and its own caches.
SIGTERM/SIGINT stop gracefully (each worker's lifespan shutdown runs); SIGHUP to the main
process reads the config again (reread_config) and restarts the workers on it, which reloads
everything, when a new worker can start (see worker_problem).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from pydantic import BaseModel

from app import LOG_FORMAT, QUIET_LOGGERS
from app.api.app import create_app
from app.api.config_refusal import set_config_refused
from app.api.hardening import harden, uvicorn_options
from app.api.metrics_http import use_multiprocess_dir
from app.api.tls import ReloadingTLS
from app.config_warnings import config_warnings
from app.errors import ConfigError, RegistryAuthError
from app.pools import default_threads
from app.reload import RetryGate
from app.settings import Settings, split_listen

log = logging.getLogger(__name__)

Reread = Callable[[], Settings]
# What granian is given once, at the start: a change needs a restart.
RESTART_ONLY = ("listen", "workers", "tls", "shutdown_timeout", "limits.header_timeout")


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where and how to listen. TLS options belong here too, passed on by both runners."""

    host: str
    port: int
    workers: int


def server_options(
    settings: Settings, host: str | None = None, port: int | None = None
) -> ServerOptions:
    listen_host, listen_port = split_listen(settings.listen)
    workers = settings.workers or default_threads()  # 0: one per CPU (app.cpus)
    return ServerOptions(host or listen_host, port or listen_port, workers)


def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    reread: Reread | None = None,
) -> None:
    """Serve until stopped. Forwarded headers are not trusted: the peer address is the client.
    `reread` loads the config again (SIGHUP applies it with several workers)."""
    options = server_options(settings, host, port)
    check_listen(options)
    if options.workers == 1:
        run_uvicorn(settings, options, reread)
    else:
        run_granian(settings, options, reread)


def check_listen(options: ServerOptions) -> None:
    """One line naming `listen` when the address cannot be bound (a port in use, an address
    not on this machine, a name that does not resolve), instead of uvicorn's exit 3 after its
    start-up lines or granian's Rust backtrace. A trial bind, released at once; SO_REUSEADDR,
    as both servers set it, so a port left in TIME_WAIT by the last run is not "in use"."""
    # The family as both servers choose it: IPv6 for an address with a colon, else IPv4 (so
    # `localhost` is tried where they bind it, 127.0.0.1, not at ::1).
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            options.host, options.port, family, socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            trial.bind(address)
    except OSError as exc:
        where = f"{options.host}:{options.port}"
        raise ConfigError("listen", f"cannot listen on {where}: {exc.strerror or exc}") from None


def run_uvicorn(settings: Settings, options: ServerOptions, reread: Reread | None = None) -> None:
    on_hangup = None if reread is None else functools.partial(warn_unapplied, reread, settings)
    app = create_app(settings, on_hangup=on_hangup)
    freeze_startup_heap()
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        proxy_headers=False,
        server_header=False,
        log_level="info",
        log_config=_uvicorn_logging(),
        access_log=False,  # the audit log has the token requests; granian writes none either
        **uvicorn_options(settings),
    )
    harden(config, app)
    uvicorn.Server(config).run()


def run_granian(settings: Settings, options: ServerOptions, reread: Reread | None = None) -> None:
    # Imported here: the single-process mode (and every test of it) needs no granian.
    from granian.constants import HTTPModes, Interfaces  # noqa: PLC0415
    from granian.log import LogLevels  # noqa: PLC0415
    from granian.server import MPServer  # noqa: PLC0415  # what granian.Server is with the GIL

    # Fail here, in one process with one clear line, not in every worker.
    discard_app(create_app(settings))
    use_multiprocess_dir()  # before the fork: every worker writes its counters there
    set_config_refused(False)  # an operator's directory kept from a run before: this one loaded

    running = [settings]  # what new workers are built from: SIGHUP may replace it
    lock = threading.Lock()  # the TLS watch thread and granian's main loop both decide rolls

    class CheckedRollServer(MPServer):
        hangup = False  # a SIGHUP not yet handled: read the config again
        asked = 0  # rolls asked for (SIGHUP, the TLS watch): none asked during a reload is lost

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.wake = WakeRelay(self.main_loop_interrupt)

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

        def _reload(self, spawn_target: Any, target_loader: Any) -> Any:
            asked, hangup = self.asked, self.hangup
            if hangup:  # cleared only when seen: one arriving from here on is seen next time
                self.hangup = False
            with lock:
                go = next_settings(running, reread if hangup else None)
            result = None
            if go and not self.interrupt_signal:  # a SIGTERM meanwhile: no roll to stop at once
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
        log_dictconfig=_granian_logging(),
        respawn_failed_workers=True,
        # A worker told to stop (SIGTERM, a roll) that still has requests running after this
        # is killed: a stuck backend cannot hold a deploy forever.
        workers_kill_timeout=settings.shutdown_timeout,
        http1_settings=_granian_http1(settings),
        **_granian_tls(settings),
    )

    watch_tls_for_granian(lambda: running[0], server.roll_workers)
    # Before the fork. A worker's first collection (worker_app) then leaves the objects it
    # inherits alone: marking them would write to, and so copy, every page it shares with this
    # process. Measured with two workers after 3,000 tokens: 155 MiB PSS for the three
    # processes before, 117 MiB after.
    freeze_startup_heap()
    # Each worker is forked from this process: it builds its app from what `running` holds
    # when it starts.
    server.serve(target_loader=lambda _label: worker_app(running[0]))


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


def next_settings(running: list[Settings], reread: Reread | None) -> bool:
    """Whether to restart the workers, on the config read again (SIGHUP, with `reread`) or
    else on the settings they run on: only when a new worker can start on them. Puts them in
    `running`; says why not in one log line. Never raises: granian's supervising loop runs it,
    and an exception there would stop it from ever replacing a worker again."""
    cause = "SIGHUP ignored" if reread is not None else "workers not restarted"
    try:
        candidate = running[0] if reread is None else reread_config(reread, running[0])
        if candidate is None:
            return _refused(reread)  # said why
        problem = worker_problem(candidate)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.error("%s: %s", cause, type(exc).__name__)  # noqa: TRY400
        return _refused(reread)
    if problem is not None:
        log.error("%s: a new worker could not start (%s)", cause, problem)
        return _refused(reread)
    if reread is not None:
        set_config_refused(False)
    changed = changed_settings(running[0], candidate)
    if changed:
        log.info("SIGHUP: the config changed (%s): the workers restart on it", ", ".join(changed))
        for warning in config_warnings(candidate, os.environ):
            log.warning("%s", warning)
    running[0] = candidate
    return True


def reread_config(reread: Reread, running: Settings) -> Settings | None:
    """The config as it reads now; None (and one line in the log saying why) when it does not
    load or changes what only a restart applies."""
    try:
        candidate = reread()
    except RegistryAuthError as exc:
        log.error("SIGHUP ignored: %s", exc)  # noqa: TRY400 - one line naming the key
        return None
    except Exception as exc:  # noqa: BLE001 - a config nested past Python's recursion limit...
        log.error("SIGHUP ignored: the config cannot be read (%s)", type(exc).__name__)  # noqa: TRY400
        return None
    fixed = [
        key
        for key in changed_settings(running, candidate)
        if key in RESTART_ONLY or key.partition(".")[0] in RESTART_ONLY
    ]
    if fixed:
        log.error("SIGHUP ignored: %s changed: only a restart applies it", ", ".join(fixed))
        return None
    return candidate


def _refused(reread: Reread | None) -> bool:
    """False, after recording a refused SIGHUP for /readyz and /metrics (a roll of the TLS
    watch, without `reread`, says nothing about the config file)."""
    if reread is not None:
        set_config_refused(True)
    return False


def warn_unapplied(reread: Reread, running: Settings) -> None:
    """One process (`workers: 1`) cannot restart itself onto a new config: after a SIGHUP it
    says when the config no longer is the one it runs on (and what differs, by name)."""
    try:
        changed = changed_settings(running, reread())
    except RegistryAuthError as exc:
        log.error("SIGHUP: the config does not load: %s (it would not start)", exc)  # noqa: TRY400
        set_config_refused(True)
        return
    except Exception as exc:  # noqa: BLE001 - never end the reload loop that runs this
        log.error("SIGHUP: the config cannot be read (%s)", type(exc).__name__)  # noqa: TRY400
        set_config_refused(True)
        return
    set_config_refused(bool(changed))
    if changed:
        log.warning(
            "SIGHUP: the config changed (%s): with one worker process (`workers: 1`, or "
            "`workers: 0` on one CPU) SIGHUP reloads users, robots, ACL, keys and TLS only; "
            "restart to apply it",
            ", ".join(changed),
        )
    else:
        log.info(
            "SIGHUP: the config is unchanged; users, robots, ACL, keys and TLS reload when "
            "they change. With one worker process, a backend's secret or CA file read at "
            "start applies at the next restart"
        )


def changed_settings(old: Settings, new: Settings) -> list[str]:
    """The settings that differ, by name (`limits.header_timeout` for a key of a section);
    never their values, which may be secret."""
    changed = []
    for name in type(old).model_fields:
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if isinstance(before, BaseModel) and type(after) is type(before):
            changed += [f"{name}.{key}" for key in type(before).model_fields
                        if getattr(before, key) != getattr(after, key)]  # fmt: skip
        else:
            changed.append(name)
    return changed


def worker_app(settings: Settings) -> Any:
    """What a granian worker serves. Runs in each forked worker (every worker builds its own
    app, service and caches), before granian starts the worker's I/O threads: they inherit its
    scheduling policy."""
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


def watch_tls_for_granian(
    current: Callable[[], Settings], roll_workers: Callable[[], str | None]
) -> threading.Thread | None:
    """granian loads the certificate when a worker starts. So a thread of the main process polls
    the pair every `reload_interval`: when it changed and the new pair loads (checked in a
    scratch context first: a half-written or mismatched pair is logged and ignored), granian
    restarts the workers one by one, each new one started before the old one stops, as on an
    operator's SIGHUP; while a new worker could not start, the roll waits. `current` gives the
    settings the workers run on now (a SIGHUP may change `reload_interval` and the files)."""
    start = current()
    if start.tls is None:
        return None
    tls = ReloadingTLS(start.tls)  # `tls` itself only changes with a restart

    def watch() -> None:
        waiting = False  # a new pair whose roll waits for the other files to load again
        watched = start
        gate = RetryGate(watched)
        while True:
            _sleep_interval(current)
            if current() is not watched:
                watched = current()
                gate = RetryGate(watched)
            try:
                changed = tls.reload_if_changed()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive one bad poll
                log.error("TLS certificate check failed: %s", exc)  # noqa: TRY400
                continue
            if changed:
                gate.trying_now()
            elif not (waiting and gate.worth_trying()):
                continue
            problem = roll_workers()
            if problem is not None:
                if not waiting:
                    log.error("the new TLS certificate waits for the workers' files: %s", problem)
                waiting = True
                continue
            waiting = False
            log.info("restarting the workers one by one for the new TLS certificate")

    thread = threading.Thread(target=watch, name="tls-watch", daemon=True)
    thread.start()
    return thread


def _sleep_interval(current: Callable[[], Settings]) -> None:
    """Sleep `reload_interval` of the settings in force, in steps of at most a second: a
    SIGHUP that shortens it from minutes to seconds takes effect within one."""
    started = time.monotonic()
    while (left := current().reload_interval - (time.monotonic() - started)) > 0:
        time.sleep(min(left, 1.0))


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


def _granian_http1(settings: Settings) -> Any:
    from granian.http import HTTP1Settings  # noqa: PLC0415

    # The same cut for slow clients as uvicorn's request timeout (limits.header_timeout).
    return HTTP1Settings(header_read_timeout=int(settings.limits.header_timeout * 1000))


def _granian_tls(settings: Settings) -> dict[str, Any]:
    """granian loads the certificate from these paths when a worker starts; a renewed pair
    restarts the workers (watch_tls_for_granian). uvicorn (one worker) reloads it live."""
    if settings.tls is None:
        return {}
    from granian.constants import SSLProtocols  # noqa: PLC0415

    return {
        "ssl_cert": settings.tls.cert,
        "ssl_key": settings.tls.key,
        "ssl_protocol_min": SSLProtocols.tls12,  # what the docker and containerd clients speak
    }


def _uvicorn_logging() -> dict[str, Any]:
    """uvicorn's own lines (`uvicorn.error`: start, stop) in the app's format, on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        **_stderr_logging(),
        "loggers": {
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            **_quiet_loggers(),
        },
    }


def _granian_logging() -> dict[str, Any]:
    """Granian's own log lines and the app's (`app.*`, INFO and up) on stderr, as uvicorn mode
    writes them: with the time and the logger, and apart from the audit lines on stdout.
    (granian's default wrote `[LEVEL] message` to stdout, between the audit lines.)"""
    return {
        **_stderr_logging(),
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": _quiet_loggers(),
    }


def _quiet_loggers() -> dict[str, Any]:
    return {name: {"level": "WARNING"} for name in QUIET_LOGGERS}


def _stderr_logging() -> dict[str, Any]:
    """A `console` handler (and granian's `access`, which stays off) writing LOG_FORMAT lines
    to stderr: the part of a dictConfig both servers share."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}
    return {
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"console": handler, "access": dict(handler)},  # dictConfig pops keys
    }
