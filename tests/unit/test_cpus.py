"""CPUs a process may use: a cgroup CPU limit (v2 cpu.max, v1 CFS quota) read as the kernel
lays the files out, in directory trees built here."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import cpus, pools
from app.cpus import cgroup_cpu_limit, cgroup_mounts


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _membership(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    _write(path, "\n".join(lines))
    return path


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)],
    ids=["2 CPUs", "1.5 CPUs rounds up", "half a CPU is one", "no limit"],
)
def test_v2_limit_in_own_namespace(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    # A container with its own cgroup namespace: its cgroup is "/" and is the mount point.
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", cpu_max)
    assert cgroup_cpu_limit(root, _membership(tmp_path, "0::/"), None) == expected


def test_v2_the_lowest_limit_on_the_way_up_binds(tmp_path: Path) -> None:
    # A systemd service on the host: its own limit is 4 CPUs, its slice's is 3.
    root = tmp_path / "cgroup"
    _write(root / "system.slice" / "registry-auth.service" / "cpu.max", "400000 100000")
    _write(root / "system.slice" / "cpu.max", "300000 100000")
    membership = _membership(tmp_path, "0::/system.slice/registry-auth.service")
    assert cgroup_cpu_limit(root, membership, None) == 3

    _write(root / "system.slice" / "cpu.max", "max 100000")
    assert cgroup_cpu_limit(root, membership, None) == 4


def test_v1_quota_under_docker(tmp_path: Path) -> None:
    # cgroup v1 without a cgroup namespace: /proc/self/cgroup names the host's path, while the
    # mount point (cpu,cpuacct) is the container's own cgroup.
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "250000")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    membership = _membership(
        tmp_path,
        "12:memory:/docker/0123abcd",
        "4:cpu,cpuacct:/docker/0123abcd",
        "0::/docker/0123abcd",
    )
    assert cgroup_cpu_limit(root, membership, None) == 3

    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    assert cgroup_cpu_limit(root, membership, None) is None


def test_hybrid_host_without_limits(tmp_path: Path) -> None:
    # cgroup v1 controllers, v2 mounted elsewhere with no cpu controller, no quota anywhere.
    root = tmp_path / "cgroup"
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000")
    membership = _membership(tmp_path, "2:cpuacct:/", "1:cpu:/", "0::/")
    assert cgroup_cpu_limit(root, membership, None) is None


@pytest.mark.parametrize(
    "cpu_max", ["", "garbage", "100000", "-1 100000", "100000 0", "1.5 1"], ids=repr
)
def test_unreadable_limits_are_no_limit(tmp_path: Path, cpu_max: str) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", cpu_max)
    assert cgroup_cpu_limit(root, _membership(tmp_path, "0::/"), None) is None


def test_no_cgroup_information_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "missing", None) is None
    # A cgroup that names files which are not there (a stripped-down /sys).
    assert cgroup_cpu_limit(tmp_path / "cgroup", _membership(tmp_path, "0::/a/b"), None) is None


def _mountinfo(tmp_path: Path, *mounts: tuple[str, Path, str]) -> Path:
    """/proc/self/mountinfo with a line per (fstype, mount point, super options), as the
    kernel writes them (a space in a path as \\040), after a root and a tmpfs line."""
    lines = [
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
        "31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    ]
    for number, (fstype, point, options) in enumerate(mounts, start=40):
        escaped = str(point).replace(" ", "\\040")
        lines.append(f"{number} 31 0:{number} / {escaped} rw,nosuid - {fstype} cgroup {options}")
    path = tmp_path / "mountinfo"
    _write(path, "\n".join(lines))
    return path


def test_v1_mounted_where_mountinfo_says(tmp_path: Path) -> None:
    # An older host with its cpu hierarchy at /cgroup/cpu, not under /sys/fs/cgroup.
    mount = tmp_path / "old layout" / "cpu"
    _write(mount / "cpu.cfs_quota_us", "150000")
    _write(mount / "cpu.cfs_period_us", "100000")
    mountinfo = _mountinfo(
        tmp_path, ("cgroup", tmp_path / "old layout" / "memory", "rw,memory"),
        ("cgroup", mount, "rw,cpu,cpuacct"),
    )  # fmt: skip
    membership = _membership(tmp_path, "3:memory:/", "2:cpu,cpuacct:/")
    assert cgroup_cpu_limit(tmp_path / "sys-fs-cgroup", membership, mountinfo) == 2
    # Without mountinfo the usual layout is all there is to look at: nothing there.
    assert cgroup_cpu_limit(tmp_path / "sys-fs-cgroup", membership, None) is None


def test_v2_mounted_where_mountinfo_says(tmp_path: Path) -> None:
    # A hybrid host: v1 controllers under /sys/fs/cgroup, v2 at /sys/fs/cgroup/unified.
    root = tmp_path / "cgroup"
    _write(root / "unified" / "app.slice" / "cpu.max", "100000 100000")
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000")
    mountinfo = _mountinfo(
        tmp_path, ("cgroup2", root / "unified", "rw,nsdelegate"), ("cgroup", root / "cpu", "rw,cpu")
    )
    membership = _membership(tmp_path, "1:cpu:/", "0::/app.slice")
    assert cgroup_mounts(mountinfo).v2 == root / "unified"
    assert cgroup_cpu_limit(root, membership, mountinfo) == 1


def test_unreadable_mountinfo_falls_back_to_the_usual_layout(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", "300000 100000")
    membership = _membership(tmp_path, "0::/")
    assert cgroup_cpu_limit(root, membership, tmp_path / "no-mountinfo") == 3
    garbage = tmp_path / "garbage"
    _write(garbage, "not\na mountinfo - \n1 2 3")
    assert cgroup_mounts(garbage) == (None, [])
    assert cgroup_cpu_limit(root, membership, garbage) == 3


def test_worker_and_thread_counts_follow_the_lower_of_cores_and_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda _: set(range(64)))
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 2)
    assert pools.default_threads() == 2
    assert pools.WorkerPool("test").threads == 2

    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 128)
    assert pools.default_threads() == 64

    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert pools.default_threads() == 64


def test_this_machine_reads_without_error() -> None:
    # Whatever this machine's cgroups say, the count is a positive number of CPUs, never more
    # than the cores the process may run on.
    limit = cgroup_cpu_limit()
    assert limit is None or limit >= 1
    assert 1 <= cpus.available_cpus() <= len(cpus.os.sched_getaffinity(0))
