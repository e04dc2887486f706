"""Running the app under uvicorn."""

from __future__ import annotations

import uvicorn

from app.api.app import create_app
from app.api.hardening import harden, uvicorn_options
from app.settings import Settings, split_listen


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until stopped. Forwarded headers are not trusted: the peer address is the client."""
    listen_host, listen_port = split_listen(settings.listen)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host or listen_host,
        port=port or listen_port,
        proxy_headers=False,
        server_header=False,
        log_level="info",
        **uvicorn_options(settings),
    )
    harden(config, app)
    uvicorn.Server(config).run()
