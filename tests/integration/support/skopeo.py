"""The real `skopeo` as the registry client, isolated per test.

Each `Skopeo` has its own state dir: auth file, policy, registries.conf, temp files and the
blob-info cache. As a normal user the cache follows $XDG_DATA_HOME; as root containers/image
always uses /var/lib/containers/cache, so skopeo runs in a private mount namespace with the
state dir bound there (`unshare --mount`). Results carry the return code and stderr: tests
assert failures as precisely as successes.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.support.procs import require_program

SYSTEM_CACHE_PARENT = "/var/lib/containers"
# $0 = the dir to bind, then the command. mkdir: skopeo as root would create it anyway.
_BIND_SCRIPT = (
    f'mkdir -p {SYSTEM_CACHE_PARENT} && mount --bind "$0" {SYSTEM_CACHE_PARENT} && exec "$@"'
)
_INSECURE_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


@dataclass(frozen=True)
class Creds:
    """A user name and password for a registry; the password never shows in a repr."""

    username: str
    password: str = field(repr=False)

    @property
    def flag_value(self) -> str:
        return f"{self.username}:{self.password}"


@dataclass(frozen=True)
class SkopeoResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> object:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"skopeo exited {self.returncode}: {' '.join(self.argv)}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


class Skopeo:
    """Run skopeo copy / inspect / delete / list-tags against plain-HTTP loopback registries."""

    def __init__(self, state_dir: Path, *, timeout: float = 60.0) -> None:
        self.binary = require_program("skopeo", package="skopeo")
        self.state_dir = state_dir
        self.timeout = timeout
        for sub in ("data", "config", "runtime", "tmp", "system"):
            (state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.auth_file = state_dir / "auth.json"
        self.policy = state_dir / "policy.json"
        self.policy.write_text(json.dumps(_INSECURE_POLICY), encoding="utf-8")
        self.registries_conf = state_dir / "registries.conf"
        self.registries_conf.write_text("", encoding="utf-8")
        self.cache_isolation = _cache_isolation()

    @property
    def blob_cache_dir(self) -> Path:
        """Where this skopeo's blob-info cache ends up (when isolation is possible)."""
        if self.cache_isolation == "mount-namespace":
            return self.state_dir / "system" / "cache"
        return self.state_dir / "data" / "containers" / "cache"

    def copy(
        self,
        src: str,
        dest: str,
        *,
        src_creds: Creds | None = None,
        dest_creds: Creds | None = None,
    ) -> SkopeoResult:
        """`src`/`dest` are skopeo references; creds None = anonymous on docker:// sides."""
        args = ["copy", *_side("src", src, src_creds), *_side("dest", dest, dest_creds)]
        return self.run([*args, src, dest])

    def inspect(self, ref: str, creds: Creds | None = None, *, raw: bool = False) -> SkopeoResult:
        return self.run(["inspect", *(["--raw"] if raw else []), *_flags(creds), ref])

    def delete(self, ref: str, creds: Creds | None = None) -> SkopeoResult:
        return self.run(["delete", *_flags(creds), ref])

    def list_tags(self, repository_ref: str, creds: Creds | None = None) -> SkopeoResult:
        """`repository_ref` = docker://HOST/REPO (no tag)."""
        return self.run(["list-tags", *_flags(creds), repository_ref])

    def run(self, args: list[str]) -> SkopeoResult:
        argv = [
            self.binary,
            "--policy",
            str(self.policy),
            "--tmpdir",
            str(self.state_dir / "tmp"),
            *args,
        ]
        full = argv
        if self.cache_isolation == "mount-namespace":
            full = [*_unshare_prefix(), str(self.state_dir / "system"), *argv]
        completed = subprocess.run(
            full,
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=self.timeout,
            check=False,
        )
        return SkopeoResult(argv, completed.returncode, completed.stdout, completed.stderr)

    def _env(self) -> dict[str, str]:
        state = self.state_dir
        return {
            **os.environ,
            "HOME": str(state),  # no ~/.docker/config.json of the machine
            "XDG_DATA_HOME": str(state / "data"),
            "XDG_CONFIG_HOME": str(state / "config"),
            "XDG_RUNTIME_DIR": str(state / "runtime"),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
        }


def _side(side: str, ref: str, creds: Creds | None) -> list[str]:
    if not ref.startswith("docker://"):
        return []
    tls = [f"--{side}-tls-verify=false"]
    if creds is None:
        return [*tls, f"--{side}-no-creds"]
    return [*tls, f"--{side}-creds", creds.flag_value]


def _flags(creds: Creds | None) -> list[str]:
    auth = ["--no-creds"] if creds is None else ["--creds", creds.flag_value]
    return ["--tls-verify=false", *auth]


def _unshare_prefix() -> list[str]:
    unshare = require_program("unshare", package="util-linux")
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", _BIND_SCRIPT]


@functools.cache
def _cache_isolation() -> str:
    """How skopeo's blob-info cache is kept per test: 'xdg' (non-root), 'mount-namespace' (root),
    or 'shared' when root cannot unshare (then only the distinct content per image protects us).
    """
    if os.geteuid() != 0:
        return "xdg"
    with tempfile.TemporaryDirectory(prefix="skopeo-probe-") as probe:
        probe_argv = [*_unshare_prefix(), probe, "test", "-d", SYSTEM_CACHE_PARENT]
        result = subprocess.run(probe_argv, capture_output=True, check=False)
    return "mount-namespace" if result.returncode == 0 else "shared"
