"""Whether the last SIGHUP left the config file unapplied: it did not load, or changed what
only a restart applies (or, with one process, changed anything). The log says why once; this
lets /readyz and /metrics of every worker keep saying it, until a SIGHUP applies the file: the
next restart would otherwise fail, or change the service, without warning.

granian's main process decides and its workers answer, so the fact is a file in the directory
they already share (the metrics' multiprocess directory); one process keeps it in memory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from app.api.metrics_http import MULTIPROC_ENV

_MARK = "sighup-refused"  # not *.db: prometheus-client's collector reads only those
_refused_here = False


def set_config_refused(refused: bool) -> None:
    global _refused_here  # noqa: PLW0603 - one process's own record of it
    _refused_here = refused
    path = _mark()
    if path is None:
        return
    with contextlib.suppress(OSError):  # the directory gone at shutdown: nobody to tell
        if refused:
            path.touch()
        else:
            path.unlink(missing_ok=True)


def config_refused() -> bool:
    path = _mark()
    return path.exists() if path is not None else _refused_here


def _mark() -> Path | None:
    directory = os.environ.get(MULTIPROC_ENV)
    return Path(directory) / _MARK if directory else None
