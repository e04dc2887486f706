"""What the server runner adds for hardening, kept apart from it so either can change alone:
metrics shared across workers, the request read timeout, our reloading TLS context, a bounded
graceful shutdown, and exit status 0 after a clean SIGTERM shutdown.
"""

from __future__ import annotations

import signal
from typing import Any

from fastapi import FastAPI

from app.api.metrics_http import use_multiprocess_dir
from app.api.slow_clients import request_timeout_protocol
from app.api.tls import use_tls
from app.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # On SIGTERM uvicorn stops accepting and lets in-flight requests finish; one that still
    # runs after `shutdown_timeout` is cancelled (TokenServer answers it 503), so a stuck
    # backend cannot hold a deploy forever.
    return {
        "http": request_timeout_protocol(settings.limits.header_timeout),
        "timeout_graceful_shutdown": settings.shutdown_timeout,
    }


def harden(config: Any, app: FastAPI) -> None:
    """After the app and uvicorn.Config are made, just before serving: metrics shared by
    workers, HTTPS with the reloading context when configured, exit 0 after SIGTERM.

    The metrics directory is set only now, when the app was built without error, and still
    before prometheus-client is first imported (by the first request): a `serve` that fails
    to start leaves the environment of its process as it was."""
    use_multiprocess_dir()
    use_tls(config, app.state.tls)
    exit_zero_on_sigterm()


def exit_zero_on_sigterm() -> None:
    """uvicorn re-raises a caught SIGTERM once it has shut down cleanly, which then kills the
    process with the default action (status 143). With this handler in place as the one
    uvicorn restores, that re-raise returns and `serve` ends normally: exit status 0."""
    signal.signal(signal.SIGTERM, _after_clean_shutdown)


def _after_clean_shutdown(signum: int, frame: object) -> None:
    """Nothing left to do: uvicorn has already finished every in-flight request."""
