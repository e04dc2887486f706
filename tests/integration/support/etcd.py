"""The real Debian `etcd` (3.4) with the v2 API on, on free loopback ports, in a temp data dir.

`restart(fresh=True)` brings it back on the same ports with an empty data dir (a new cluster),
as after a lost etcd volume. Reads and writes from tests go through the real `etcdctl`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.support.procs import (
    ManagedProcess,
    free_port,
    require_program,
    run_checked,
    start_process,
    wait_for_http,
)
from tests.integration.support.tlscerts import TlsFiles

NAME = "t"


@dataclass
class EtcdServer:
    workdir: Path
    client_port: int
    peer_port: int
    process: ManagedProcess | None = None
    generation: int = 0
    extra_args: tuple[str, ...] = ()  # e.g. ("--auth-token-ttl=2",)
    # With these, etcd also serves TLS on `tls_port`, and asks its clients for a certificate.
    tls: TlsFiles | None = None
    tls_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def tls_url(self) -> str:
        """The name the server certificate holds (tlscerts): localhost."""
        return f"https://localhost:{self.tls_port}"

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            f"--cert-file={self.tls.cert}",
            f"--key-file={self.tls.key}",
            f"--trusted-ca-file={self.tls.ca}",
            "--client-cert-auth=true",
        ]

    @property
    def data_dir(self) -> Path:
        return self.workdir / f"data{self.generation}"

    def start(self) -> None:
        binary = require_program("etcd", package="etcd-server")
        peer = f"http://127.0.0.1:{self.peer_port}"
        clients = self.url if self.tls is None else f"{self.url},https://127.0.0.1:{self.tls_port}"
        argv = [
            binary,
            f"--name={NAME}",
            "--enable-v2=true",  # LAIN's registry reads the v2 keyspace (protocol.md §7)
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={clients}",
            f"--advertise-client-urls={clients}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={NAME}={peer}",
            *self._tls_args(),
            *self.extra_args,
        ]
        self.process = start_process("etcd", argv, self.workdir / "logs")
        wait_for_http(self.process, f"{self.url}/health", ready=lambda r: r.status_code == 200)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean shutdown."""
        if self.process is not None and self.process.running:
            self.process.popen.kill()
            self.process.popen.wait(10)
            self.process.stop()

    def restart(self, *, fresh: bool = False) -> None:
        self.stop()
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.generation += 1
        self.start()

    def log(self) -> str:
        return self.process.log() if self.process is not None else "(etcd never started)"

    # --- the real etcdctl, for both keyspaces ---

    def etcdctl(
        self, api: str, *args: str, check: bool = True, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`user` ("name:password") once auth is on."""
        binary = require_program("etcdctl", package="etcd-client")
        login = [f"--user={user}"] if user is not None else []
        argv = [binary, f"--endpoints={self.url}", *login, *args]
        env = {"ETCDCTL_API": api.removeprefix("v")}
        if check:
            return run_checked(argv, what=f"etcdctl ({api})", env=env, timeout=20)
        return subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=20, check=False
        )

    def get(self, api: str, key: str) -> str | None:
        """The stored value, or None when the key is absent."""
        if api == "v2":
            result = self.etcdctl(api, "get", key, check=False)
            if result.returncode != 0:
                assert "Key not found" in result.stderr, result.stderr
                return None
            return result.stdout.removesuffix("\n")
        out = self.etcdctl(api, "get", key, "--print-value-only").stdout
        return out.removesuffix("\n") if out else None

    def put(self, api: str, key: str, value: str) -> None:
        self.etcdctl(api, "set" if api == "v2" else "put", key, value)

    def delete(self, api: str, key: str) -> None:
        self.etcdctl(api, "rm" if api == "v2" else "del", key)

    def enable_auth(self, api: str, password: str) -> None:
        """A `root` user with `password`, auth on. v2 and v3 auth are separate, like the keys."""
        if api == "v3":
            self.etcdctl(api, "user", "add", f"root:{password}")
            self.etcdctl(api, "auth", "enable")
            return
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            user = {"user": "root", "password": password}
            client.put("/v2/auth/users/root", json=user).raise_for_status()
            client.put("/v2/auth/enable").raise_for_status()


def start_etcd(
    workdir: Path,
    *,
    start: bool = True,
    extra_args: tuple[str, ...] = (),
    tls: TlsFiles | None = None,
) -> EtcdServer:
    """An etcd on two free ports (three with `tls`); `start=False` only reserves the ports
    (etcd "down")."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = EtcdServer(workdir, free_port(), free_port(), extra_args=extra_args)
    if tls is not None:
        server.tls, server.tls_port = tls, free_port()
    if start:
        server.start()
    return server
