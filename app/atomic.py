"""Atomic file replacement: every file this service writes (keys, users, robots) goes through here.

The data goes to a temporary file in the same directory, with its final mode set before any byte
is written (a key is never readable by others, not even for a moment), is flushed to disk, and is
renamed over the target: a reader sees the old file or the new one, never half of either. A
symlink is written through: its target is replaced and the link stays (an operator who links
users.htpasswd to a shared copy edits that copy). A file that cannot be written is an error of
this package naming the path, never an OSError.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from app.errors import RegistryAuthError


def write_atomic(
    path: Path, data: bytes, *, mode: int, error: type[RegistryAuthError] = RegistryAuthError
) -> None:
    """Replace `path` (or the file its symlinks lead to) with `data`; `error` names the path
    when that fails (a full disk, a missing or read-only directory, a directory in the way)."""
    try:
        _replace(Path(os.path.realpath(path)), data, mode)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None


def _replace(target: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
