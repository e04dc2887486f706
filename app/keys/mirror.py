"""`keys sync`: a keys directory kept in step with a read-only copy of one, such as a
Kubernetes Secret volume (read here; installed by app.keys.store.install_ring_files).

The service refuses private keys readable by its group, and Secret files are (kubelet makes
them 0440 for a non-root pod): so the keys are copied into a directory of the pod's own, and
a copy that follows the Secret lets a rotation reach running pods without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from app.atomic import read_regular
from app.errors import KeyStoreError
from app.keys.store import (
    BUNDLE_FILE,
    JWKS_FILE,
    RING_FILE,
    install_ring_files,
    read_entries,
    ring_identity,
)

# kubelet writes a Secret volume as a timestamped directory and swaps the `..data` symlink to
# the new one; the files at the top are symlinks through it. Reading through the resolved
# `..data` reads one version whole.
KUBELET_DATA = "..data"
_ATTEMPTS = 3


def copy_ring(source: Path, keys_dir: Path) -> str | None:
    """Install the ring of `source` into keys_dir; what changed, in a line, or None."""
    installed = install_ring_files(keys_dir, read_ring_files(source), str(source))
    if installed is None:
        return None
    ring, removed = installed.key_ring, ", ".join(installed.removed)
    return (
        f"copied the key ring of {source} into {keys_dir}: {len(ring.keys)} key(s), active "
        f"{ring.active.kid}; wrote {', '.join(installed.written) or 'nothing'}"
        + (f"; removed {removed}" if removed else "")
    )


def follow(
    source: Path,
    keys_dir: Path,
    *,
    every: float,
    sleep: Callable[[float], None],
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> NoReturn:
    """copy_ring every `every` seconds, for good: each change said, each new error warned of
    once (not on every look), the keys in keys_dir kept as they are meanwhile."""
    last_error = ""
    while True:
        try:
            copied = copy_ring(source, keys_dir)
            if copied is not None:
                say(copied)
            last_error = ""
        except KeyStoreError as exc:
            if str(exc) != last_error:
                warn(f"{exc} (the keys in {keys_dir} stay as they are)")
            last_error = str(exc)
        sleep(every)


def read_ring_files(source: Path) -> dict[str, bytes]:
    """The files of the ring in `source` (name -> content): keyring.json, each key's .key and
    .crt, and bundle.pem and jwks.json when present. Other files are left out."""
    for attempt in range(_ATTEMPTS):
        root = _version(source)
        seen = ring_identity(root)
        try:
            files = _read(root, source)
        except KeyStoreError:
            # A version replaced (and removed) while it was read: read the new one.
            if attempt + 1 < _ATTEMPTS and (_version(source), ring_identity(root)) != (root, seen):
                continue
            raise
        if ring_identity(root) == seen:
            return files
    raise KeyStoreError(f"{source} kept changing while it was read: try again")


def _version(source: Path) -> Path:
    if not source.is_dir():
        raise KeyStoreError(f"{source} is not a directory (give --from the keys to copy)")
    data = source / KUBELET_DATA
    return data.resolve() if data.is_dir() else source


def _read(root: Path, source: Path) -> dict[str, bytes]:
    if not (root / RING_FILE).is_file():
        raise KeyStoreError(
            f"no key ring in {source} ({RING_FILE} is missing): it must hold a keys directory "
            "made by `registry-auth keys generate`"
        )
    names = [RING_FILE, *(n for n in (BUNDLE_FILE, JWKS_FILE) if (root / n).is_file())]
    for entry in read_entries(root):
        names += [f"{entry.id}.key", f"{entry.id}.crt"]
    files: dict[str, bytes] = {}
    for name in names:
        try:
            files[name] = read_regular(root / name, KeyStoreError)
        except OSError as exc:
            raise KeyStoreError(f"cannot read {source / name}: {exc.strerror}") from None
    return files
