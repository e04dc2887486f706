"""A state file the service could not write: with systemd's ProtectSystem=strict and the
config in /etc/registry-auth, the default `state.path` (beside the config) is read-only. The
store fails open, so the service ran with brute-force counting off and no refresh tokens,
said only in a warning per login. Now the start is refused, naming `state.path`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.support.authserver import app_command, generate_key
from tests.integration.support.procs import free_port

pytestmark = pytest.mark.integration


def _serve_with_read_only(directory: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """`serve` in a mount namespace of its own where `directory` is read-only (as systemd's
    ProtectSystem= makes /etc): nothing outside the test sees the mount."""
    as_root = [] if os.geteuid() == 0 else ["--map-root-user"]
    command = " ".join(app_command("serve", "--config", str(config)))
    script = f"mount --bind -o ro {directory} {directory} && exec {command}"
    return subprocess.run(
        ["unshare", "--mount", *as_root, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("exists", [False, True], ids=["to-be-created", "existing"])
def test_a_state_file_on_a_read_only_directory_refuses_the_start(
    tmp_path: Path, exists: bool
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    generate_key(tmp_path / "keys")
    if exists:
        (etc / "registry-auth.db").write_bytes(b"")
    config = etc / "config.yaml"
    config.write_text(
        f"issuer: i\nservice: s\nrealm: http://127.0.0.1:9/token\n"
        f"listen: 127.0.0.1:{free_port()}\nkeys_dir: {tmp_path / 'keys'}\n",
        encoding="utf-8",
    )
    result = _serve_with_read_only(etc, config)
    assert result.returncode == 2, result
    named = etc / "registry-auth.db" if exists else etc
    assert result.stderr.startswith(
        f"registry-auth: error: config: state.path: {named} is on a read-only file system: "
        "failed logins could not be counted nor refresh tokens kept"
    ), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr

    # The same config with state.path on a writable volume starts.
    state = tmp_path / "var" / "registry-auth.db"
    state.parent.mkdir()
    config.write_text(config.read_text() + f"state: {{path: {state}}}\n", encoding="utf-8")
    process = subprocess.Popen(
        app_command("serve", "--config", str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=5)  # still serving
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "state.path" not in err


def test_a_read_only_tmp_refuses_the_start_naming_the_fix(tmp_path: Path) -> None:
    """`docker run --read-only` without `--tmpfs /tmp`: the metrics files' directory cannot be
    made. The start failed with Python's "No usable temporary directory found", naming no fix."""
    generate_key(tmp_path / "keys")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"issuer: i\nservice: s\nrealm: http://127.0.0.1:9/token\n"
        f"listen: 127.0.0.1:{free_port()}\nkeys_dir: {tmp_path / 'keys'}\n"
        "state: {backend: none}\n",
        encoding="utf-8",
    )
    # /tmp (where tmp_path is: the working directory, tempfile's last resort) and /var/tmp.
    as_root = [] if os.geteuid() == 0 else ["--map-root-user"]
    command = " ".join(app_command("serve", "--config", str(config)))
    mounts = " && ".join(f"mount --bind -o ro {d} {d}" for d in ("/tmp", "/var/tmp"))  # noqa: S108
    # Nor coverage's measurement of the child: its data file is under /tmp too (the checkout).
    environment = {
        key: value
        for key, value in os.environ.items()
        if key != "TMPDIR" and not key.startswith("COVERAGE_PROCESS")
    }
    result = subprocess.run(
        ["unshare", "--mount", *as_root, "sh", "-c", f"{mounts} && exec {command}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=environment,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith(
        "registry-auth: error: no writable temporary directory for the metrics files"
    ), result.stderr
    assert "mount a tmpfs on /tmp" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
