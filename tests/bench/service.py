"""The service under test: a generated key and users in a temporary directory, started as an
operator would (`python -m app serve --config ... --workers 0`), plus its processes' RSS/CPU."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.authn.htpasswd import hash_password
from app.keys.model import Algorithm
from app.keys.store import generate_key

PASSWORD = "bench-password"
SERVICE = "registry.local"


def make_workdir(root: Path, users: int) -> Path:
    """Key + an htpasswd of `users` accounts (one bcrypt hash at cost 10, shared: every account
    is still a separate check) + the base64 Basic values of every account."""
    generate_key(root / "keys", Algorithm.RS256)
    hashed = hash_password(PASSWORD, rounds=10)
    names = [f"user{i}" for i in range(users)]
    (root / "users.htpasswd").write_text("".join(f"{n}:{hashed}\n" for n in names))
    (root / "auth.txt").write_text("".join(f"{basic(n)}\n" for n in names))
    return root


def basic(account: str, password: str = PASSWORD) -> str:
    return base64.b64encode(f"{account}:{password}".encode()).decode("ascii")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The main process and its workers."""
        return [self.process.pid, *children(self.process.pid)]

    def rss_kib(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in self.pids())

    def cpu_seconds(self) -> dict[int, float]:
        return {pid: _cpu_seconds(pid) for pid in self.pids()}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(workdir: Path, name: str, **settings: Any) -> Server:
    port = free_port()
    config = {
        "issuer": "bench",
        "service": SERVICE,
        "realm": f"http://127.0.0.1:{port}/token",
        "listen": f"127.0.0.1:{port}",
        "keys_dir": str(workdir / "keys"),
        "htpasswd": str(workdir / "users.htpasswd"),
        "state": {"path": str(workdir / f"{name}.db")},
        "workers": 0,
        **settings,
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log)
    _wait_ready(server)
    return server


def _wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the service exited: see {server.log}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                time.sleep(1)  # every worker up, not just the first
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service did not answer in {timeout} s: see {server.log}")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
