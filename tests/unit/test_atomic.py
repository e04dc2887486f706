"""app.atomic.write_atomic: the one way files are written (keys, users, robots, JWKS)."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from app.atomic import write_atomic
from app.errors import KeyStoreError, RegistryAuthError
from app.keys.mirror import copy_ring
from app.keys.model import Algorithm
from app.keys.store import add_key, generate_key


def test_a_missing_directory_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "users.htpasswd"
    with pytest.raises(RegistryAuthError) as raised:
        write_atomic(path, b"x\n", mode=0o600)
    assert str(raised.value) == f"cannot write {path}: No such file or directory"
    assert raised.value.__suppress_context__  # one line, not the OSError's traceback too


def test_a_directory_in_the_way_is_refused_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").mkdir()
    with pytest.raises(KeyStoreError, match=r"jwks\.json: Is a directory"):
        write_atomic(tmp_path / "jwks.json", b"{}", mode=0o644, error=KeyStoreError)
    assert [p.name for p in tmp_path.iterdir()] == ["jwks.json"]


def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "real.htpasswd"
    target.write_bytes(b"old\n")
    link = tmp_path / "users.htpasswd"
    link.symlink_to(target.name)
    write_atomic(link, b"new\n", mode=0o600)
    assert link.is_symlink()
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "robots.yaml"
    link.symlink_to("robots-real.yaml")
    write_atomic(link, b"robots: {}\n", mode=0o600)
    assert link.is_symlink()
    assert (tmp_path / "robots-real.yaml").read_bytes() == b"robots: {}\n"


def null_device(path: Path) -> Path:
    """A character device node like /dev/null (harmless if written to), made where a test
    may replace it; skipped where nodes cannot be made (not root)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CI runs as root)")
    return path


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
@pytest.mark.parametrize("through_a_symlink", [False, True])
def test_a_device_or_fifo_is_refused_not_replaced(
    tmp_path: Path, kind: str, through_a_symlink: bool
) -> None:
    """`keys jwks --output /dev/full` turned /dev/full into a regular file and said it wrote."""
    special = tmp_path / "special"
    if kind == "FIFO":
        os.mkfifo(special)
    else:
        null_device(special)
    path = tmp_path / "link" if through_a_symlink else special
    if through_a_symlink:
        path.symlink_to(special.name)
    with pytest.raises(KeyStoreError) as raised:
        write_atomic(path, b"{}", mode=0o644, error=KeyStoreError)
    assert str(raised.value) == f"{path} is a {kind}, not a regular file"
    test = stat.S_ISFIFO if kind == "FIFO" else stat.S_ISCHR
    assert test(special.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"special", path.name})


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="a root-only case (CI runs as root)")


@ROOT_ONLY
def test_as_root_a_replaced_file_keeps_its_owner(tmp_path: Path) -> None:
    """A users file the service's user owns, in a directory of root's: rewritten by root, it
    must stay readable to that user."""
    existing = tmp_path / "users.htpasswd"
    existing.write_text("old\n")
    os.chown(existing, 23456, 23457)
    write_atomic(existing, b"new\n", mode=0o600)
    write_atomic(tmp_path / "new.txt", b"x\n", mode=0o600)
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in tmp_path.iterdir()}
    assert owners == {"users.htpasswd": (23456, 23457), "new.txt": (0, 0)}


@ROOT_ONLY
@pytest.mark.parametrize("command", ["add", "sync", "users"])
def test_as_root_nothing_is_written_in_a_directory_another_user_owns(
    tmp_path: Path, command: str
) -> None:
    """The directory's owner (the service's user) could swap a symlink in between any check
    and the write, or replace the whole directory by one: a root-owned executable holding its
    line landed in a root-only directory (a cron job away from root). Root now refuses, and
    names the user to run as."""
    service_dir = tmp_path / "state"
    keys_dir = service_dir / "keys"
    generate_key(keys_dir, Algorithm.ES256)
    for path in (service_dir, keys_dir, *keys_dir.iterdir()):
        os.lchown(path, 12345, 12345)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in keys_dir.iterdir())
    source = tmp_path / "secret"
    generate_key(source, Algorithm.ES256)
    writes = {
        "add": lambda: add_key(keys_dir, Algorithm.ES256),
        "sync": lambda: copy_ring(source, keys_dir),
        "users": lambda: write_atomic(service_dir / "users.htpasswd", b"x\n", mode=0o600),
    }
    refusal = rf"will not write .* as root: {service_dir} belongs to (uid )?12345"
    with pytest.raises(RegistryAuthError, match=refusal) as refused:
        writes[command]()
    try:
        sudo = f"sudo -u {pwd.getpwuid(12345).pw_name} registry-auth"
    except KeyError:  # no such user here: sudo names it '#UID'
        sudo = "sudo -u '#12345' registry-auth"
    assert sudo in str(refused.value)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in keys_dir.iterdir()) == before


@ROOT_ONLY
def test_as_root_a_symlink_another_user_made_is_not_followed(tmp_path: Path) -> None:
    precious = tmp_path / "passwd"
    precious.write_text("root's\n")
    link = tmp_path / "users.htpasswd"
    link.symlink_to(precious)
    os.lchown(link, 12345, 12345)
    with pytest.raises(RegistryAuthError, match=r"is a symlink owned by (uid )?12345"):
        write_atomic(link, b"alice:$2b$...\n", mode=0o600)
    assert precious.read_text() == "root's\n"
    os.lchown(link, 0, 0)  # root's own link: written through, as for any user
    write_atomic(link, b"new\n", mode=0o600)
    assert precious.read_text() == "new\n"


@ROOT_ONLY
def test_as_root_a_root_link_into_another_users_directory_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    link = tmp_path / "keys"
    link.symlink_to(theirs)  # root's link, but where it leads the other user decides
    with pytest.raises(RegistryAuthError, match=f"{theirs} belongs to"):
        write_atomic(link / "keyring.json", b"{}", mode=0o644)
    assert list(theirs.iterdir()) == []


@ROOT_ONLY
def test_as_root_a_root_link_to_a_file_in_another_users_directory_is_refused(
    tmp_path: Path,
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "users.htpasswd").write_text("old\n")
    os.chown(theirs, 12345, 12345)
    link = tmp_path / "users.htpasswd"
    link.symlink_to(theirs / "users.htpasswd")  # root's link; the directory is theirs
    with pytest.raises(RegistryAuthError, match=f"{theirs} belongs to"):
        write_atomic(link, b"new\n", mode=0o600)
    assert (theirs / "users.htpasswd").read_text() == "old\n"


@ROOT_ONLY
def test_as_root_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    with pytest.raises(RegistryAuthError, match="writable by group or others"):
        write_atomic(shared / "users.htpasswd", b"x\n", mode=0o600)
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot touch what root owns there
    write_atomic(shared / "users.htpasswd", b"x\n", mode=0o600)
