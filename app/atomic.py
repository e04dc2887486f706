"""Atomic file replacement: every file this service writes (keys, users, robots) goes through here.

The data goes to a temporary file in the same directory, with its final mode set before any byte
is written (a key is never readable by others, not even for a moment), is flushed to disk, and is
renamed over the target: a reader sees the old file or the new one, never half of either. A
symlink is written through: its target is replaced and the link stays (an operator who links
users.htpasswd to a shared copy edits that copy); as root, only a symlink root owns. Run as root
(`sudo registry-auth keys add`), the new file keeps the owner of the file it replaces, or takes
the directory's: a root-owned key or users file would be one the service, running as its own
user, cannot read. A file that
cannot be written is an error of this package naming the path, never an OSError.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from app.errors import RegistryAuthError


def write_atomic(
    path: Path, data: bytes, *, mode: int, error: type[RegistryAuthError] = RegistryAuthError
) -> None:
    """Replace `path` (or the file its symlinks lead to) with `data`; `error` names the path
    when that fails (a full disk, a missing or read-only directory, a directory in the way)."""
    try:
        if os.geteuid() == 0:
            _refuse_foreign_symlink(path, error)
        _replace(Path(os.path.realpath(path)), data, mode)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None


def _refuse_foreign_symlink(path: Path, error: type[RegistryAuthError]) -> None:
    """Root writes through a symlink only if root made it: one the service's user made in its
    own directory (the keys, say) could point root at /etc/shadow."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
        raise error(
            f"cannot write {path} as root: it is a symlink owned by uid {st.st_uid}; "
            "run the command as that user"
        )


def _replace(target: Path, data: bytes, mode: int) -> None:
    owner = _owner_to_keep(target) if os.geteuid() == 0 else None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        if owner is not None:
            os.fchown(fd, *owner)
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


def _owner_to_keep(target: Path) -> tuple[int, int]:
    """(uid, gid) of the file being replaced, or of its directory for a new file."""
    try:
        st = target.stat()
    except FileNotFoundError:
        st = target.parent.stat()
    return st.st_uid, st.st_gid
