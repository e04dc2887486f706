"""stderr whose reader stopped reading (a supervisor's log pipe that hangs), against the real
service: its log lines are dropped instead of stopping the event loop, tokens keep being
answered, and once the reader catches up the next line says how many were dropped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.support.authserver import add_user, app_command, generate_key
from tests.integration.support.procs import free_port, killed_if_left, wait_until_serving

pytestmark = pytest.mark.integration


def _drain(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def _fill(fd: int) -> None:
    """Fill the pipe from our own end: from now on a blocking write to it waits."""
    os.set_blocking(fd, False)
    try:
        while True:
            os.write(fd, b"#" * 4096)
    except BlockingIOError:
        pass


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "granian-2-workers"])
def test_a_stderr_nobody_reads_stops_nothing(tmp_path: Path, workers: int) -> None:
    generate_key(tmp_path / "keys")
    add_user(tmp_path / "users.htpasswd", "alice", "pw")
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"issuer: i\nservice: registry.test\nrealm: http://127.0.0.1:{port}/token\n"
        f"listen: 127.0.0.1:{port}\nkeys_dir: {tmp_path / 'keys'}\n"
        f"htpasswd: {tmp_path / 'users.htpasswd'}\nstate: {{path: {tmp_path / 's.db'}}}\n"
        f"workers: {workers}\n",
        encoding="utf-8",
    )
    read, write = os.pipe()
    os.set_blocking(read, False)
    try:
        serve = app_command("serve", "--config", str(config))
        with killed_if_left(
            subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=write)
        ) as process:
            _check_nothing_waits(process, f"http://127.0.0.1:{port}", read, write)
            # SIGTERM is not held up either.
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    finally:
        os.close(read)
        os.close(write)


def _check_nothing_waits(process: subprocess.Popen[bytes], url: str, read: int, write: int) -> None:
    wait_until_serving(process, f"{url}/healthz")
    time.sleep(0.5)
    _drain(read)
    _fill(write)

    # Each refused refresh grant logs a line: with stderr full, a blocking write would stop the
    # event loop at the first one, and every request after it would wait.
    with httpx.Client(timeout=5, trust_env=False) as client:
        codes = {
            client.post(
                f"{url}/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": "not-a-token",
                    "service": "registry.test",
                    "client_id": "test",
                },
            ).status_code
            for _ in range(200)
        }
        assert codes == {401}  # refused, promptly
        login = client.get(
            f"{url}/token", params={"service": "registry.test"}, auth=("alice", "pw")
        )
        assert login.status_code == 200

        # The reader catches up: the next line says how many were dropped.
        _drain(read)
        client.post(
            f"{url}/token",
            data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": "test"},
        )
    deadline = time.monotonic() + 10
    after = b""
    while b"refresh grant refused" not in after and time.monotonic() < deadline:
        time.sleep(0.1)
        after += _drain(read)
    text = after.decode()
    assert "log line(s) were dropped: stderr's reader was not keeping up" in text, text
    assert "refresh grant refused" in text, text
