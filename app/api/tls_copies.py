"""The certificate and key granian's workers load: private copies of the pair in force.

granian reads the pair from paths when a worker starts, and resolved those paths (symlinks
included) once, when the server was built. A renewal that repoints a symlink (certbot's `live/`,
a Kubernetes Secret's `..data`) then went unseen by every new worker, which loaded the old
target again; and once the old target was deleted (kubelet removes it at once) each new worker
panicked and granian exited. So granian is given copies: the pair as loaded and checked
(ReloadingTLS), written to a directory of this process's own (0700, removed at exit; one a
SIGKILL left is removed by the next start: app.api.scratch), in a subdirectory per pair, so a
worker never meets half of one. The copies are written again where they went missing (a
cleaner of old files in /tmp): by the main process as it polls, and by a new worker before
granian reads them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import stat
from pathlib import Path

from app.api.scratch import PrivateDirectory
from app.atomic import write_atomic
from app.errors import RegistryAuthError

Pair = tuple[bytes, bytes]  # certificate chain PEM, private key PEM


class PairCopies:
    def __init__(self, pair: Pair) -> None:
        self._directory = PrivateDirectory("tls")
        atexit.register(self._directory.close)
        self._root = self._directory.path
        self._number = 0
        self._pair = pair
        self.cert, self.key = self._write_new(pair)

    def replace(self, pair: Pair) -> None:
        """Copies of `pair` in a new subdirectory, which `cert` and `key` then name; the
        previous one stays (a worker being started may be about to read it), older ones go."""
        self.cert, self.key = self._write_new(pair)
        self._pair = pair
        shutil.rmtree(self._root / str(self._number - 2), ignore_errors=True)

    def ensure(self) -> None:
        """Write the copies again if either is gone."""
        if not (self.cert.is_file() and self.key.is_file()):
            self._write(self.cert.parent, self._pair)

    def _write_new(self, pair: Pair) -> tuple[Path, Path]:
        self._number += 1
        directory = self._root / str(self._number)
        return self._write(directory, pair)

    def _write(self, directory: Path, pair: Pair) -> tuple[Path, Path]:
        self._directory.ensure()  # made again if a cleaner removed it
        _private_directory(self._root)
        _private_directory(directory)
        cert, key = directory / "cert.pem", directory / "key.pem"
        write_atomic(key, pair[1], mode=0o600)
        write_atomic(cert, pair[0], mode=0o600)
        return cert, key


def _private_directory(path: Path) -> None:
    """`path` as a directory of this user's that no one else may enter: made (0700) if missing;
    one that someone else made meanwhile under the same name is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)  # noqa: PTH102 - the mode, exactly, with no parents
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise RegistryAuthError(f"{path}: not a private directory of this user's")
