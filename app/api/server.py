"""Running the app: uvicorn in this process (`workers: 1`), or granian with N worker processes
(app.api.supervisor).

Why granian for several workers: measured on this project's 2-core machines, uvicorn's
`--workers 2` now and then left every keep-alive connection on one worker (the kernel hands a
shared listening socket's connections to whichever process accepts first), while granian spread
them evenly; its HTTP layer is also Rust, not Python (see the README's Performance section).
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass

import uvicorn

from app.api.app import create_app
from app.api.config_reread import Reread, warn_unapplied
from app.api.hardening import harden, uvicorn_options
from app.api.server_logging import uvicorn_logging
from app.api.watchdog import dump_stacks_on_sigusr1
from app.api.workers import freeze_startup_heap
from app.errors import ConfigError
from app.pools import default_threads
from app.settings import Settings, split_listen


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where and how to listen. TLS options belong here too, passed on by both runners."""

    host: str
    port: int
    workers: int
    named: str = "listen"  # what gave the address, for an error: the setting, or options


def server_options(
    settings: Settings, host: str | None = None, port: int | None = None
) -> ServerOptions:
    listen_host, listen_port = split_listen(settings.listen)
    workers = settings.workers or default_threads()  # 0: one per CPU (app.cpus)
    given = "/".join(name for name, value in (("--host", host), ("--port", port)) if value)
    return ServerOptions(host or listen_host, port or listen_port, workers, given or "listen")


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
        # Imported here: the single-process mode (and every test of it) needs no granian.
        from app.api import supervisor  # noqa: PLC0415

        supervisor.run_granian(settings, options, reread)


def check_listen(options: ServerOptions) -> None:
    """One line naming `listen` (or --host/--port) when the address cannot be bound (a port in
    use, an address not on this machine, a name that does not resolve), instead of uvicorn's
    exit 3 after its start-up lines or granian's Rust backtrace. A trial bind, released at
    once; SO_REUSEADDR, as both servers set it, so a port left in TIME_WAIT by the last run is
    not "in use"."""
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
        raise ConfigError(
            options.named, f"cannot listen on {where}: {exc.strerror or exc}"
        ) from None


def run_uvicorn(settings: Settings, options: ServerOptions, reread: Reread | None = None) -> None:
    on_hangup = None if reread is None else functools.partial(warn_unapplied, reread, settings)
    app = create_app(settings, on_hangup=on_hangup)
    dump_stacks_on_sigusr1()  # `kill -USR1 PID`: where every thread is, on stderr
    freeze_startup_heap()
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        proxy_headers=False,
        server_header=False,
        log_level="info",
        log_config=uvicorn_logging(),
        access_log=False,  # the audit log has the token requests; granian writes none either
        **uvicorn_options(settings),
    )
    harden(config, app)
    uvicorn.Server(config).run()
