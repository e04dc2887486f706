"""Entry point of the `registry-auth` command: the CLI, with the web server plugged in."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from app.api.server import serve
from app.cli import run


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, serve=serve)


if __name__ == "__main__":
    sys.exit(main())
