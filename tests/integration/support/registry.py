"""The real Debian `docker-registry` (distribution 2.8) with `auth: token:`, on a free port.

Its storage lives in a temp dir and survives `restart()`, so a test can restart the registry
with a new rootcertbundle (key rotation) and still find the images it pushed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tests.integration.support.procs import (
    ManagedProcess,
    free_port,
    require_program,
    start_process,
    wait_for_http,
)


@dataclass(frozen=True)
class TokenAuth:
    """The registry's `auth: token:` block: must match the token service's settings."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass
class Registry:
    """A running registry; `url` is http://127.0.0.1:PORT, `host` is what skopeo names."""

    port: int
    auth: TokenAuth
    workdir: Path
    process: ManagedProcess
    secret: str = field(repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yml"

    @property
    def storage_dir(self) -> Path:
        return self.workdir / "storage"

    def ref(self, repository: str, tag: str) -> str:
        """A skopeo reference to an image in this registry."""
        return f"docker://{self.host}/{repository}:{tag}"

    def log(self) -> str:
        return self.process.log()

    def restart(self, *, rootcertbundle: Path | None = None) -> None:
        """Stop, rewrite the config (same port, same storage), start and wait for readiness.

        The registry reads its rootcertbundle only at start: a new bundle needs a restart.
        """
        self.process.stop()
        if rootcertbundle is not None:
            self.auth = replace(self.auth, rootcertbundle=rootcertbundle)
        write_registry_config(self.config_path, self.port, self.auth, self.storage_dir, self.secret)
        self.process = _launch(self.config_path, self.workdir, self.url)

    def stop(self) -> None:
        self.process.stop()


def registry_config(port: int, auth: TokenAuth, storage_dir: Path, secret: str) -> dict[str, Any]:
    """The registry's config.yml as data."""
    return {
        "version": 0.1,
        # debug: the registry says why it rejects a token only at debug/info level.
        "log": {"level": "debug", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secret},
        "auth": {
            "token": {
                "realm": auth.realm,
                "service": auth.service,
                "issuer": auth.issuer,
                "rootcertbundle": str(auth.rootcertbundle),
            }
        },
    }


def write_registry_config(
    path: Path, port: int, auth: TokenAuth, storage_dir: Path, secret: str
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(registry_config(port, auth, storage_dir, secret), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def start_registry(workdir: Path, auth: TokenAuth, *, port: int | None = None) -> Registry:
    """Write a config under workdir and start `docker-registry serve` on a free loopback port."""
    port = port or free_port()
    secret = secrets.token_hex(16)
    config = write_registry_config(workdir / "config.yml", port, auth, workdir / "storage", secret)
    url = f"http://127.0.0.1:{port}"
    return Registry(port, auth, workdir, _launch(config, workdir, url), secret)


def _launch(config: Path, workdir: Path, url: str) -> ManagedProcess:
    binary = require_program("docker-registry", package="docker-registry")
    process = start_process("docker-registry", [binary, "serve", str(config)], workdir / "logs")
    # Ready = any HTTP answer on /v2/ (401 with auth on): the listener and the config are up.
    wait_for_http(process, f"{url}/v2/")
    return process
