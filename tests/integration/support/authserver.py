"""Our token service as a user runs it: `python -m app serve --config CFG` in a subprocess.

Keys and users are made with our own CLI (`keys generate`, `users add --password-stdin`), so
the integration tests also prove the commands an operator types.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.integration.support.procs import (
    ManagedProcess,
    ProcessError,
    free_port,
    run_checked,
    start_process,
    wait_for_http,
)

PYTHON = sys.executable  # the venv's python: the one running pytest, with `app` installed


def app_command(*args: str) -> list[str]:
    return [PYTHON, "-m", "app", *args]


def generate_key(keys_dir: Path, algorithm: str = "RS256") -> str:
    """`keys generate`; returns the kid it prints on its last line."""
    result = run_checked(
        app_command("keys", "generate", "--keys-dir", str(keys_dir), "--algorithm", algorithm),
        what="registry-auth keys generate",
    )
    return result.stdout.strip().splitlines()[-1]


def add_user(htpasswd: Path, name: str, password: str) -> None:
    run_checked(
        app_command("users", "add", name, "--htpasswd", str(htpasswd), "--password-stdin"),
        what=f"registry-auth users add {name}",
        input_text=password + "\n",
    )


@dataclass
class AuthServer:
    """A running token service. `realm` is the URL the registry sends clients to."""

    port: int
    workdir: Path
    settings: dict[str, Any]
    kid: str
    process: ManagedProcess
    users: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return str(self.settings["realm"])

    @property
    def service(self) -> str:
        return str(self.settings["service"])

    @property
    def issuer(self) -> str:
        return str(self.settings["issuer"])

    @property
    def keys_dir(self) -> Path:
        return Path(self.settings["keys_dir"])

    @property
    def bundle(self) -> Path:
        return self.keys_dir / "bundle.pem"

    @property
    def config_path(self) -> Path:
        return self.workdir / "registry-auth.yaml"

    def log(self) -> str:
        return self.process.log()

    def token(
        self,
        scopes: list[str] | tuple[str, ...] = (),
        auth: tuple[str, str] | None = None,
        *,
        offline: bool = False,
    ) -> httpx.Response:
        """Ask the realm as a client does: GET with service, scopes, optional Basic creds;
        `offline` as `docker login` asks (offline_token=true, client_id=docker)."""
        params = [("service", self.service), *(("scope", scope) for scope in scopes)]
        if auth is not None:
            params.append(("account", auth[0]))
        if offline:
            params += [("offline_token", "true"), ("client_id", "docker")]
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            return client.get(self.realm, params=params, auth=auth)

    def wait_ready(self) -> None:
        """Until GET /healthz answers 200 and every worker has started; ProcessError with the
        service's log otherwise."""
        wait_for_http(self.process, f"{self.url}/healthz", ready=lambda r: r.status_code == 200)
        self.wait_workers()

    def wait_workers(self) -> None:
        """Until each of several workers has started: the first answers before the others
        have, and a test that then breaks a file or kills a worker would race their start."""
        workers = self.settings.get("workers", 1)
        deadline = time.monotonic() + 20
        while (
            isinstance(workers, int)
            and workers > 1
            and self.log().count("Started worker-") < workers
        ):
            if not self.process.running or time.monotonic() > deadline:
                raise ProcessError(f"not all {workers} workers started:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.stop()


def start_auth_server(workdir: Path, **options: Any) -> AuthServer:
    """Generate a key, add users, write the YAML config, start the service and wait for it."""
    server = launch_auth_server(workdir, **options)
    server.wait_ready()
    return server


def launch_auth_server(
    workdir: Path,
    *,
    algorithm: str = "RS256",
    users: dict[str, str] | None = None,
    issuer: str = "registry-auth integration",
    service: str = "registry.test",
    token_ttl: int = 300,
    x5c: bool = True,
    extra_settings: dict[str, Any] | None = None,
) -> AuthServer:
    """Like start_auth_server without waiting: start the registry meanwhile, then wait_ready()."""
    port = free_port()
    keys_dir, htpasswd = workdir / "keys", workdir / "users.htpasswd"
    workdir.mkdir(parents=True, exist_ok=True)  # `users add` makes the file, not its directory
    # Key and users at once (each is a Python start); users one by one: they share a file.
    with ThreadPoolExecutor(max_workers=1) as pool:
        kid = pool.submit(generate_key, keys_dir, algorithm)
        for name, password in (users or {}).items():
            add_user(htpasswd, name, password)
    settings: dict[str, Any] = {
        "issuer": issuer,
        "service": service,
        "realm": f"http://127.0.0.1:{port}/token",
        "listen": f"127.0.0.1:{port}",
        "keys_dir": str(keys_dir),
        "htpasswd": str(htpasswd) if users else None,
        "token_ttl": token_ttl,
        "x5c": x5c,
        **(extra_settings or {}),
    }
    config = workdir / "registry-auth.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    process = start_process(
        "registry-auth",
        app_command("serve", "--config", str(config)),
        workdir / "logs",
        drop_env_prefixes=("REGISTRY_AUTH_",),
    )
    return AuthServer(port, workdir, settings, kid.result(), process, dict(users or {}))
