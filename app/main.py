"""Entry point of the `registry-auth` command: the CLI, with the web server plugged in."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from app.cli import run
from app.early_signals import hold_early_signals

if TYPE_CHECKING:
    from app.settings import Settings


def _serve(
    settings: Settings, host: str | None, port: int | None, reread: Callable[[], Settings]
) -> None:
    # Imported here: `keys generate` or `users add` need not load FastAPI and uvicorn (~1 s).
    from app.api.server import serve  # noqa: PLC0415

    serve(settings, host, port, reread)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["serve"]:  # the command line of a real process
        hold_early_signals()
    return run(argv, serve=_serve)


if __name__ == "__main__":
    sys.exit(main())
