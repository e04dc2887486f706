"""How many CPUs this process may use: the cores it may run on, or fewer under a cgroup limit.

`workers: 0` starts one worker process per CPU, and the bcrypt and signing pools size
themselves by it. In a container the cores the process may run on are the host's: a pod
limited to 2 CPUs on a 64-core node would start 64 workers (~45 MiB each) and 64 bcrypt threads
in each, and the kernel would then throttle them all to the 2 CPUs. So a CPU limit set in the
cgroup (`docker run --cpus`, Kubernetes `limits.cpu`, systemd `CPUQuota=`) counts too, rounded
up: a limit of 1.5 CPUs gives 2. cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us` over
`cpu.cfs_period_us`) are read, at every level from the process's own cgroup up to the root
of the mounted hierarchy, since a parent's limit binds its children too. Where the
hierarchies are mounted comes from /proc/self/mountinfo (the usual /sys/fs/cgroup layout when
that cannot be read). A file that is missing or unreadable means no limit from it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
SELF_MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPED = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space in a path as \040
_Reader = Callable[[Path], int | None]  # one level's limit, in whole CPUs


def available_cpus() -> int:
    """CPUs this process may use: its cores, or the cgroup CPU limit when that is lower."""
    cores = _cores()
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit)) if limit is not None else cores


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cgroup_cpu_limit(
    root: Path = CGROUP_ROOT,
    membership: Path = SELF_CGROUP,
    mountinfo: Path | None = SELF_MOUNTINFO,
) -> int | None:
    """The lowest CPU limit on this process's cgroups in whole CPUs (rounded up), or None.

    Without `mountinfo` (or when it lists no cgroup), the hierarchies are taken to be where
    systemd and Docker mount them: v2 at `root`, v1 at `root`/<controllers>."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None  # not Linux, or no cgroups
    mounts = cgroup_mounts(mountinfo) if mountinfo is not None else Mounts(None, [])
    limits: list[int] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2
            limits += _limits(mounts.v2 or root, path, _v2_limit)
        elif "cpu" in controllers.split(","):  # cgroup v1: mounted as .../cpu or .../cpu,cpuacct
            mount = mounts.v1_mount(controllers) or root / controllers
            limits += _limits(mount, path, _v1_limit)
    return min(limits) if limits else None


class Mounts(NamedTuple):
    """Where the cgroup hierarchies are mounted: v2, and each v1 one with its controllers."""

    v2: Path | None
    v1: list[tuple[frozenset[str], Path]]

    def v1_mount(self, controllers: str) -> Path | None:
        wanted = set(controllers.split(","))
        return next((mount for options, mount in self.v1 if wanted <= options), None)


def cgroup_mounts(mountinfo: Path = SELF_MOUNTINFO) -> Mounts:
    """The cgroup mounts /proc/self/mountinfo lists (the first of each, when bound twice)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return Mounts(None, [])
    v2: Path | None = None
    v1: list[tuple[frozenset[str], Path]] = []
    for line in lines:
        # ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        tail = fields[fields.index("-") + 1 :]
        mount = Path(_ESCAPED.sub(lambda m: chr(int(m[1], 8)), fields[4]))
        if tail[:1] == ["cgroup2"] and v2 is None:
            v2 = mount
        elif tail[:1] == ["cgroup"] and len(tail) >= 3:
            v1.append((frozenset(tail[2].split(",")), mount))
    return Mounts(v2, v1)


def _limits(mount: Path, path: str, read: _Reader) -> list[int]:
    """The limit of each level from the cgroup `path` up to the mount point. In a container
    with its own cgroup namespace the path is `/` and the mount point is its own cgroup; in
    one without (cgroup v1 under Docker), the path names a directory that is not mounted
    there, and the mount point holds the container's limit."""
    found = []
    directory = PurePosixPath("/", path)
    for level in (directory, *directory.parents):
        limit = read(mount / str(level).lstrip("/"))
        if limit is not None:
            found.append(limit)
    return found


def _v2_limit(directory: Path) -> int | None:
    # cpu.max: "<quota> <period>" in microseconds, or "max <period>" for no limit.
    fields = _read(directory / "cpu.max").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _whole_cpus(fields[0], fields[1])


def _v1_limit(directory: Path) -> int | None:
    # cpu.cfs_quota_us is -1 for no limit.
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    return _whole_cpus(quota, period)


def _whole_cpus(quota: str, period: str) -> int | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:  # missing (no such controller or level), or not readable
        return ""
