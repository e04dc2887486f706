"""`keys sync`: a keys directory that follows a Kubernetes Secret volume (files 0440, kubelet's
`..data` layout), so that a rotation reaches running pods without a restart."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.cli import build_parser
from app.cli_keys_sync import run_keys_sync
from app.errors import KeyStoreError
from app.keys import ring
from app.keys.mirror import read_ring_files
from app.keys.model import Algorithm
from app.keys.store import (
    add_key,
    generate_key,
    install_ring_files,
    load_keyring,
    read_entries,
    update_ring,
)
from app.main import main
from tests.kubelet import publish_secret
from tests.unit.ring_reader import reading_meanwhile

FORCED = ring.TokenWindow(token_ttl=1)  # with --force the window does not matter


class Admin:
    """The operator's keys directory and the Secret volume a pod sees of it."""

    def __init__(self, root: Path) -> None:
        self.keys = root / "admin-keys"
        self.secret = root / "secret"
        self.pod_keys = root / "pod-keys"
        self.first = generate_key(self.keys, Algorithm.ES256).kid
        self.publish()

    def publish(self) -> None:
        publish_secret(self.keys, self.secret)

    def rotate(self) -> str:
        """add + promote + retire (forced) of the old active key; returns the new kid."""
        old = load_keyring(self.keys).active.kid
        new = add_key(self.keys, Algorithm.ES256).kid
        update_ring(self.keys, lambda entries: ring.promote(entries, new, _now()))
        update_ring(
            self.keys, lambda entries: ring.retire(entries, old, _now(), window=FORCED, force=True)
        )
        return new


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def admin(tmp_path: Path) -> Admin:
    return Admin(tmp_path)


def sync(admin: Admin, *options: str, sleep: object = None) -> int:
    args = build_parser().parse_args(
        ["keys", "sync", "--from", str(admin.secret), "--keys-dir", str(admin.pod_keys), *options]
    )
    return run_keys_sync(args, sleep=sleep if callable(sleep) else (lambda _: None))


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_once_copies_the_ring_with_private_keys_0600(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stat.S_IMODE((admin.secret / "keyring.json").stat().st_mode) == 0o440
    with pytest.raises(KeyStoreError, match="readable by group"):
        load_keyring(admin.secret)  # why the copy exists at all

    assert sync(admin, "--once") == 0

    assert load_keyring(admin.pod_keys).active.kid == admin.first
    for path in admin.pod_keys.iterdir():
        if path.suffix == ".key":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    admin_files = {n: d for n, d in contents(admin.keys).items() if not n.startswith(".")}
    assert {n: d for n, d in contents(admin.pod_keys).items() if not n.startswith(".")} == (
        admin_files
    )
    assert f"active {admin.first}" in capsys.readouterr().out


def test_a_second_look_changes_nothing(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    sync(admin, "--once")
    before = {p.name: p.stat().st_mtime_ns for p in admin.pod_keys.iterdir()}
    assert install_ring_files(admin.pod_keys, read_ring_files(admin.secret), "s") is None
    assert sync(admin, "--once") == 0
    assert "already holds the key ring" in capsys.readouterr().out.splitlines()[-1]
    assert {p.name: p.stat().st_mtime_ns for p in admin.pod_keys.iterdir()} == before


def test_a_rotation_arrives_and_the_retired_key_leaves(admin: Admin) -> None:
    sync(admin, "--once")
    new = admin.rotate()
    admin.publish()

    sync(admin, "--once")

    assert load_keyring(admin.pod_keys).active.kid == new
    kept = {f"{e.id}{s}" for e in read_entries(admin.keys) for s in (".key", ".crt")}
    pod_key_files = {p.name for p in admin.pod_keys.iterdir() if p.suffix in (".key", ".crt")}
    assert pod_key_files == kept
    assert all(admin.first.replace(":", "")[:16].lower() not in name for name in pod_key_files)


def test_keyring_json_goes_in_after_the_files_it_names_and_old_files_leave_after_it(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync(admin, "--once")
    admin.rotate()
    admin.publish()
    events: list[str] = []
    real_replace, real_unlink = Path.replace, Path.unlink

    def replace(self: Path, target: Path) -> Path:
        if Path(target).parent == admin.pod_keys:
            events.append(f"in {Path(target).name}")
        return real_replace(self, target)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.parent == admin.pod_keys:
            events.append(f"out {self.name}")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    sync(admin, "--once")

    ring_at = events.index("in keyring.json")
    assert all(e.startswith("in ") for e in events[:ring_at]), events
    assert [e for e in events[:ring_at] if e.endswith((".key", ".crt"))], events
    assert len([e for e in events[ring_at + 1 :] if e.startswith("out ")]) == 2, events


def test_a_reader_never_sees_a_ring_it_cannot_load(admin: Admin) -> None:
    sync(admin, "--once")
    with reading_meanwhile(admin.pod_keys) as reads:
        for _ in range(8):
            admin.rotate()
            admin.publish()
            sync(admin, "--once")
    assert reads.errors == []
    assert reads.loads > 0


@pytest.mark.parametrize("damage", ["ring", "key", "missing"])
def test_a_broken_secret_changes_nothing(admin: Admin, damage: str) -> None:
    sync(admin, "--once")
    before = contents(admin.pod_keys)
    admin.rotate()
    new_id = next(e.id for e in read_entries(admin.keys) if e.kid != admin.first)
    if damage == "ring":
        (admin.keys / "keyring.json").write_text('{"keys": [{"broken')
    elif damage == "key":
        (admin.keys / f"{new_id}.key").write_text("not a PEM private key\n")
    else:
        (admin.keys / f"{new_id}.crt").unlink()
    admin.publish()

    with pytest.raises(KeyStoreError) as refused:
        sync(admin, "--once")

    assert str(admin.secret) in str(refused.value)
    assert ".sync-" not in str(refused.value)
    assert contents(admin.pod_keys) == before
    assert [p.name for p in admin.pod_keys.iterdir() if p.name.startswith(".sync-")] == []


def test_a_key_file_with_a_loose_mode_is_made_0600_again(admin: Admin) -> None:
    sync(admin, "--once")
    key = next(admin.pod_keys.glob("*.key"))
    key.chmod(0o640)
    sync(admin, "--once")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


class StopLoopError(Exception):
    pass


class Looks:
    """The loop's sleep: runs a step of the test between looks, and stops after the last."""

    def __init__(self, steps: Iterator[object]) -> None:
        self.steps = steps
        self.intervals: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        if next(self.steps, None) is None:
            raise StopLoopError


def test_the_loop_follows_rotations_and_says_a_broken_secret_once(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    news: list[str] = []

    def steps() -> Iterator[object]:
        news.append(admin.rotate())
        admin.publish()
        yield "rotated"
        (admin.secret / "..data" / "keyring.json").chmod(0o640)
        (admin.secret / "..data" / "keyring.json").write_text("{")
        yield "broken"
        yield "still broken"
        admin.publish()
        yield "mended"

    looks = Looks(steps())
    with pytest.raises(StopLoopError):
        sync(admin, "--interval", "3s", sleep=looks)

    assert looks.intervals == [3, 3, 3, 3, 3]
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("keeping ")
    assert sum(f"active {news[0]}" in line for line in out.splitlines()) == 1
    assert err.count("is damaged") == 1  # said once, not on every look
    assert "stay as they are" in err
    assert load_keyring(admin.pod_keys).active.kid == news[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "nowhere", "--keys-dir", "k"], "nowhere is not a directory"),
        (["--from", "k", "--keys-dir", "k"], "is the keys directory itself"),
        (["--from", "k", "--keys-dir", "j", "--interval", "0s"], "at least 1s"),
        (["--from", "k", "--keys-dir", "j", "--interval", "soon"], "--interval 'soon'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k").mkdir()
    assert main(["keys", "sync", "--once", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("registry-auth: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_a_directory_without_a_ring_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyStoreError, match=r"no key ring in .*empty \(keyring.json is missing\)"):
        read_ring_files(tmp_path / "empty")


def test_only_ring_files_are_installed(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="not a key ring's files"):
        install_ring_files(tmp_path / "k", {"keyring.json": b"{}", "../escape": b"x"}, "src")
    assert not (tmp_path / "escape").exists()
