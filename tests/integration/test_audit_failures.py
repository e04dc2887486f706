"""An audit log that cannot be written, against the real service: a full disk (/dev/full
answers every write with ENOSPC) and a FIFO whose reader stopped reading (as stdout under a
supervisor that hangs). Tokens keep being issued, nothing blocks, the loss is counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.support.authserver import (
    add_user,
    app_command,
    generate_key,
    launch_auth_server,
    start_auth_server,
)
from tests.integration.support.procs import free_port, killed_if_left, wait_until_serving

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-Secret-1"}


def _dropped(server_url: str) -> float:
    metrics = httpx.get(f"{server_url}/metrics", timeout=10).text
    line = next(
        x for x in metrics.splitlines() if x.startswith("registry_auth_audit_lines_dropped_total")
    )
    return float(line.split()[-1])


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "granian-2-workers"])
def test_a_full_disk_drops_audit_lines_and_tokens_are_still_issued(
    tmp_path: Path, workers: int
) -> None:
    extra = {"audit_log": "/dev/full", "workers": workers}
    server = start_auth_server(tmp_path, users=USERS, extra_settings=extra)
    try:
        answers = [
            server.token(["repository:team/app:pull"], ("alice", USERS["alice"])) for _ in range(20)
        ]
        assert {answer.status_code for answer in answers} == {200}
        assert _dropped(server.url) == 20
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200
        log = server.log()
        assert "Traceback" not in log
        # One line per worker that met the problem, not one per request.
        errors = log.count("a line could not be written (No space left on device)")
        assert 1 <= errors <= workers, log
    finally:
        server.stop()
    assert server.process.popen.returncode == 0


# Lines of ~400 bytes, and of ~3 KiB: Linux gives a write whose end does not fit the pipe's
# last page a page of its own, so a pipe of such lines is full at half its size in bytes.
SCOPES = {
    "short": ["repository:team/app:pull"],
    "long": [f"repository:team/{c * 200}:pull" for c in "abcdef"],
}


@pytest.mark.parametrize("lines", ["short", "long"])
def test_a_fifo_nobody_reads_blocks_nothing_and_writing_resumes_once_read(
    tmp_path: Path, lines: str
) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    # A reader that opened the FIFO (so the service's open does not wait) and then stopped.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        server = launch_auth_server(
            tmp_path / "auth", users=USERS, extra_settings={"audit_log": str(fifo)}
        )
        server.wait_ready()
        try:
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                codes = list(
                    pool.map(
                        lambda _: (
                            server.token(SCOPES[lines], ("alice", USERS["alice"])).status_code
                        ),
                        range(600),  # far more than the pipe's 64 KiB
                    )
                )
            assert set(codes) == {200}
            assert time.monotonic() - started < 60
            dropped = _dropped(server.url)
            assert dropped > 0
            ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
            assert "the audit log is dropping lines" in " ".join(ready.get("warnings", []))
            # The reader catches up: lines go through again, and the log says so.
            drained = b""
            while True:
                try:
                    chunk = os.read(reader, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                drained += chunk
            assert server.token([], ("alice", USERS["alice"])).status_code == 200
            assert "audit log: writing again" in server.log()
            # Every line that came through is whole JSON: none cut, none run together.
            time.sleep(0.5)
            received = (drained + os.read(reader, 1 << 20)).splitlines()
            assert len(received) > 10
            assert all(json.loads(line)["account"] == "alice" for line in received)
            # SIGTERM is not held up by a blocked write.
            server.process.popen.send_signal(signal.SIGTERM)
            assert server.process.popen.wait(timeout=20) == 0
        finally:
            server.stop()
    finally:
        os.close(reader)


def test_stdout_nobody_reads_blocks_nothing(tmp_path: Path) -> None:
    """The default `audit_log: "-"` under a supervisor that stopped reading stdout: the pipe
    is written through a descriptor of its own that never waits (stdout's own stays as it
    is, shared with the other processes)."""
    generate_key(tmp_path / "keys")
    add_user(tmp_path / "users.htpasswd", "alice", USERS["alice"])
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"issuer: i\nservice: registry.test\nrealm: http://127.0.0.1:{port}/token\n"
        f"listen: 127.0.0.1:{port}\nkeys_dir: {tmp_path / 'keys'}\n"
        f"htpasswd: {tmp_path / 'users.htpasswd'}\nstate: {{path: {tmp_path / 's.db'}}}\n",
        encoding="utf-8",
    )
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            app_command("serve", "--config", str(config)), stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        with killed_if_left(process):
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(process, f"{url}/healthz")
            with httpx.Client(timeout=10, trust_env=False) as client:
                codes = {
                    client.get(
                        f"{url}/token",
                        params={"service": "registry.test", "scope": SCOPES["long"]},
                        auth=("alice", USERS["alice"]),
                    ).status_code
                    for _ in range(300)  # ~3 KiB each, stdout unread: far past its 64 KiB
                }
                assert codes == {200}
                assert _dropped(url) > 0
                warnings = client.get(f"{url}/readyz").json().get("warnings", [])
                assert "the audit log is dropping lines" in " ".join(warnings)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
    finally:
        assert process.stdout is not None
        process.stdout.close()
    log = (tmp_path / "stderr.log").read_text()
    assert log.count("audit log (stdout): a line could not be written") == 1, log
