"""app.atomic.write_atomic: the one way files are written (keys, users, robots, JWKS)."""

from __future__ import annotations

import os
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


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away (CI runs as root)")
def test_as_root_a_file_keeps_its_owner_or_takes_the_directorys(tmp_path: Path) -> None:
    """`sudo registry-auth keys add` (or users add) on a directory the service's user owns:
    root-owned files there are files the service cannot read."""
    service_user, other = (12345, 12345), (23456, 23457)
    os.chown(tmp_path, *service_user)
    existing = tmp_path / "users.htpasswd"
    existing.write_text("old\n")
    os.chown(existing, *other)
    write_atomic(existing, b"new\n", mode=0o600)
    write_atomic(tmp_path / "new.key", b"key\n", mode=0o600)
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in tmp_path.iterdir()}
    assert owners == {"users.htpasswd": other, "new.key": service_user}


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="a root-only case (CI runs as root)")


@ROOT_ONLY
def test_as_root_keys_add_leaves_files_the_directory_owner_can_use(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    generate_key(keys_dir, Algorithm.ES256)  # as root: root's files, a root-owned lock
    os.chown(keys_dir, 12345, 12345)
    for path in keys_dir.iterdir():
        if not path.name.startswith("."):
            os.chown(path, 12345, 12345)
    add_key(keys_dir, Algorithm.ES256)
    new = {p.name: p.stat().st_uid for p in keys_dir.iterdir() if not p.name.startswith(".")}
    assert set(new.values()) == {12345}, new  # the new key, its certificate, ring, bundle, JWKS
    lock = keys_dir / ".keyring.lock"
    assert stat.S_IMODE(lock.stat().st_mode) & 0o044  # root's lock: its user can still take it


@ROOT_ONLY
def test_as_root_a_symlinked_lock_is_not_followed(tmp_path: Path) -> None:
    """The directory's owner could point the lock at /etc/shadow: root opening it, then
    giving it to that owner, was a way to root."""
    keys_dir = tmp_path / "keys"
    generate_key(keys_dir, Algorithm.ES256)
    precious = tmp_path / "shadow"
    precious.write_text("root's\n")
    precious.chmod(0o600)
    lock = keys_dir / ".keyring.lock"
    lock.unlink()
    lock.symlink_to(precious)
    os.lchown(lock, 12345, 12345)
    with pytest.raises(KeyStoreError, match="cannot write in keys directory"):
        add_key(keys_dir, Algorithm.ES256)
    assert (precious.stat().st_uid, precious.read_text()) == (0, "root's\n")


@ROOT_ONLY
def test_as_root_a_symlink_another_user_made_is_not_written_through(tmp_path: Path) -> None:
    precious = tmp_path / "passwd"
    precious.write_text("root's\n")
    link = tmp_path / "users.htpasswd"
    link.symlink_to(precious)
    os.lchown(link, 12345, 12345)
    with pytest.raises(RegistryAuthError, match="a symlink owned by uid 12345"):
        write_atomic(link, b"alice:$2b$...\n", mode=0o600)
    assert precious.read_text() == "root's\n"
    os.lchown(link, 0, 0)  # root's own link: written through, as for any user
    write_atomic(link, b"new\n", mode=0o600)
    assert precious.read_text() == "new\n"


@ROOT_ONLY
def test_as_root_keys_sync_leaves_files_the_directory_owner_can_use(tmp_path: Path) -> None:
    """The copy is made in a scratch directory first, which root made: its files were
    root's, and a 0600 key root owns is one the service cannot read."""
    source, keys_dir = tmp_path / "secret", tmp_path / "keys"
    generate_key(source, Algorithm.ES256)
    keys_dir.mkdir()
    os.chown(keys_dir, 12345, 12345)
    copy_ring(source, keys_dir)
    owners = {p.name: p.stat().st_uid for p in keys_dir.iterdir() if not p.name.startswith(".")}
    assert set(owners.values()) == {12345}, owners
