"""Private directories for as long as their process runs: removed at exit, and the ones a killed
process left are removed by the next one; one whose process still runs is left alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from app.api.scratch import PrivateDirectory, remove_left_behind, scratch_directory

# A process that makes a directory of the kind, writes a file into it, says where, then waits.
MAKER = textwrap.dedent(
    """
    import sys, time
    from app.api.scratch import private_directory
    path = private_directory(sys.argv[1])
    (path / "key.pem").write_text("secret")
    print(path, flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def start_maker(base: Path, kind: str) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", MAKER, kind],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(base)},
        cwd=Path(__file__).parents[3],
    )
    assert process.stdout is not None
    path = Path(process.stdout.readline().strip())
    assert path.parent == base
    return process, path


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL: no exit handler runs."""
    process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


def test_a_directory_is_private_and_gone_when_closed(base: Path) -> None:
    directory = PrivateDirectory("tls")
    assert directory.path.parent == base
    assert directory.path.name.startswith("registry-auth-tls.")
    assert stat.S_IMODE(directory.path.stat().st_mode) == 0o700
    directory.close()
    assert not directory.path.exists()
    assert list(base.iterdir()) == []


def test_one_a_killed_process_left_is_removed_and_a_running_ones_kept(base: Path) -> None:
    killed, left = start_maker(base, "tls")
    running, kept = start_maker(base, "tls")
    try:
        kill(killed)
        assert (left / "key.pem").read_text() == "secret"  # nothing removed it
        mine = PrivateDirectory("tls")  # a new start looks first
        assert not left.exists()
        assert (kept / "key.pem").read_text() == "secret"
        assert remove_left_behind("tls", base) == []  # its own, held, stays too
        mine.close()
    finally:
        kill(running)
    assert remove_left_behind("tls", base) == [kept]


def test_only_its_own_kind_is_removed(base: Path) -> None:
    killed, left = start_maker(base, "metrics")
    kill(killed)
    PrivateDirectory("tls").close()
    assert left.exists()
    assert remove_left_behind("metrics", base) == [left]


def test_a_scratch_directory_lasts_for_its_block(base: Path) -> None:
    with scratch_directory("tls-check") as path:
        (path / "key.pem").write_text("secret")
        assert remove_left_behind("tls-check", base) == []
    assert not path.exists()


def test_a_directory_a_cleaner_removed_is_made_again_and_held(base: Path) -> None:
    directory = PrivateDirectory("tls")
    try:
        directory.path.rmdir()  # systemd-tmpfiles ages out old files in /tmp
        directory.ensure()
        assert stat.S_IMODE(directory.path.stat().st_mode) == 0o700
        assert remove_left_behind("tls", base) == []
    finally:
        directory.close()
    assert not directory.path.exists()
