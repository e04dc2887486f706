"""A Kubernetes Secret volume as kubelet writes one, for the tests of `keys sync`.

kubelet's atomic writer puts each version of the Secret in a new hidden directory
(`..2026_11_29_06_00_00.123`), swaps the `..data` symlink to it by a rename, links every file
at the top through `..data`, and then removes the old version. With `fsGroup` set the files
are mode 0440 (defaultMode 0440 in deploy/kubernetes).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

_versions = itertools.count(1)


def publish_secret(keys_dir: Path, volume: Path) -> None:
    """What `kubectl create secret generic --from-file=keys_dir` + kubelet's next sync give."""
    volume.mkdir(exist_ok=True)
    version = volume / f"..2026_11_29_06_00_00.{next(_versions)}"
    version.mkdir()
    names = sorted(p.name for p in keys_dir.iterdir() if p.is_file())
    for name in names:
        shutil.copyfile(keys_dir / name, version / name)
        (version / name).chmod(0o440)
    data = volume / "..data"
    old = data.resolve() if data.is_symlink() else None
    (volume / "..data_tmp").symlink_to(version.name)
    (volume / "..data_tmp").rename(data)
    for name in names:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    for link in volume.iterdir():
        if link.is_symlink() and link.name != "..data" and link.name not in names:
            link.unlink()
    if old is not None:
        shutil.rmtree(old)
