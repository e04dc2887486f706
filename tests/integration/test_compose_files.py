"""deploy/compose's own files, run with the real programs outside containers (no Docker engine
here): init.sh makes the key and ships the bundle, registry-auth serves deploy/compose/config.yaml
and publishes to etcd, docker-registry 2.8 runs deploy/compose/registry-config.yml through
deploy/registry-start.sh, and skopeo pushes and pulls as the compose README's user would.

Only the container paths and host names are mapped to temp dirs and loopback ports, by the
environment variables the programs already honour (REGISTRY_AUTH_*, REGISTRY_*, ETCD_*).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.support.authserver import add_user, app_command
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.support.oci import OciImage, manifest_digest
from tests.integration.support.procs import (
    ManagedProcess,
    free_port,
    require_program,
    start_process,
    wait_for_http,
)
from tests.integration.support.skopeo import Creds, Skopeo

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "deploy" / "compose"
USER = Creds("alice", "alice-Compose-1")


def run_init(
    data: Path, bundle: Path, owner: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        # registry-auth from the venv running the tests, as the image has it on PATH.
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DATA_DIR": str(data),
        "BUNDLE_DIR": str(bundle),
        "OWNER": owner or f"{os.getuid()}:{os.getgid()}",
    }
    return subprocess.run(
        ["sh", str(COMPOSE / "init.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_init_makes_a_key_once_and_ships_the_public_bundle(tmp_path: Path) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    data.mkdir()
    bundle.mkdir()
    first = run_init(data, bundle)
    assert first.returncode == 0, first.stderr
    ring = (data / "keys" / "keyring.json").read_text()
    shipped = (bundle / "bundle.pem").read_text()
    assert shipped == (data / "keys" / "bundle.pem").read_text()
    assert "PRIVATE KEY" not in shipped
    assert (bundle / "bundle.pem").stat().st_mode & 0o777 == 0o644
    assert (data / "users.htpasswd").stat().st_mode & 0o777 == 0o600
    # Again (after `docker compose run --rm init`): the key ring stays, the bundle is re-shipped.
    (bundle / "bundle.pem").unlink()
    second = run_init(data, bundle)
    assert second.returncode == 0, second.stderr
    assert "keeping the existing key ring" in second.stdout
    assert (data / "keys" / "keyring.json").read_text() == ring
    assert (bundle / "bundle.pem").read_text() == shipped
    assert not list(bundle.glob(".*"))  # no temporary file left behind


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path / "etcd")
    yield server
    server.stop()


def start_service(workdir: Path, data: Path, etcd: EtcdServer, port: int) -> ManagedProcess:
    """registry-auth on deploy/compose/config.yaml; container paths and hosts mapped by env."""
    overrides = {
        "REGISTRY_AUTH_KEYS_DIR": str(data / "keys"),
        "REGISTRY_AUTH_HTPASSWD": str(data / "users.htpasswd"),
        "REGISTRY_AUTH_STATE__PATH": str(data / "registry-auth.db"),
        "REGISTRY_AUTH_LISTEN": f"127.0.0.1:{port}",
        "REGISTRY_AUTH_REALM": f"http://127.0.0.1:{port}/token",  # as compose.yaml sets it
        "REGISTRY_AUTH_ETCD__ENDPOINTS": f'["{etcd.url}"]',
    }
    process = start_process(
        "registry-auth",
        app_command("serve", "--config", str(COMPOSE / "config.yaml")),
        workdir / "logs",
        env=overrides,
        drop_env_prefixes=("REGISTRY_AUTH_",),
    )
    wait_for_http(process, f"http://127.0.0.1:{port}/healthz")
    return process


def start_registry(workdir: Path, bundle: Path, etcd: EtcdServer, port: int) -> ManagedProcess:
    """registry-start.sh + deploy/compose/registry-config.yml, with compose.yaml's ETCD_*."""
    env = {
        "ETCD_ENDPOINT": etcd.url,  # compose: http://etcd:2379
        "ETCD_KEY": "/lain/config/auth/registry",
        "ETCD_API": "v2",
        "ETCD_WAIT": "30",
        "REGISTRY_BIN": require_program("docker-registry", package="docker-registry"),
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(workdir / "storage"),
        "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": str(bundle / "bundle.pem"),
    }
    script = ROOT / "deploy" / "registry-start.sh"
    process = start_process(
        "registry",
        ["sh", str(script), str(COMPOSE / "registry-config.yml")],
        workdir / "logs",
        env=env,
        drop_env_prefixes=("REGISTRY_", "ETCD_"),
    )
    wait_for_http(process, f"http://127.0.0.1:{port}/v2/")
    return process


def test_the_compose_stack_files_serve_a_push_and_a_pull(
    tmp_path: Path,
    etcd_server: EtcdServer,
    skopeo: Skopeo,
    make_image: Callable[..., OciImage],
) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    data.mkdir()
    bundle.mkdir()
    init = run_init(data, bundle)
    assert init.returncode == 0, init.stderr
    # `docker compose run --rm admin users add alice`: the CLI on the same config.
    add_user(data / "users.htpasswd", USER.username, USER.password)
    auth_port, registry_port = free_port(), free_port()
    service = start_service(tmp_path / "auth", data, etcd_server, auth_port)
    registry = None
    try:
        registry = start_registry(tmp_path / "registry", bundle, etcd_server, registry_port)
        with httpx.Client(timeout=5, trust_env=False) as client:
            challenge = client.get(f"http://127.0.0.1:{registry_port}/v2/")
        # The registry's realm and service come from etcd (its file has placeholders).
        assert dict(re.findall(r'(\w+)="([^"]*)"', challenge.headers["www-authenticate"])) == {
            "realm": f"http://127.0.0.1:{auth_port}/token",
            "service": "registry.local",
        }
        image = make_image("1.0")
        target = f"docker://127.0.0.1:{registry_port}/alice/app:1.0"
        pushed = skopeo.copy(image.ref, target, dest_creds=USER)
        assert pushed.ok, f"{pushed}\n{registry.log()}\n{service.log()}"
        pulled = tmp_path / "pulled"
        result = skopeo.copy(target, f"oci:{pulled}:1.0", src_creds=USER)
        assert result.ok, f"{result}\n{registry.log()}"
        assert manifest_digest(pulled, "1.0") == image.manifest_digest
        anonymous = skopeo.inspect(target, creds=None)
        assert not anonymous.ok  # the built-in policy: anonymous clients get nothing
    finally:
        if registry is not None:
            registry.stop()
        service.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="init runs as root in the image (CI runs as root)")
def test_init_on_a_volume_the_service_user_owns_works_as_that_user() -> None:
    """A new named volume starts as the image's /var/lib/registry-auth, owned by the service's
    user (10001): init, as root, made the key there itself, which registry-auth now refuses
    (that user could redirect root's writes). It makes it as the owner."""
    top = Path(tempfile.mkdtemp(prefix="compose-init-"))  # /tmp: the owner can reach it
    try:
        top.chmod(0o755)
        data, bundle = top / "data", top / "bundle"
        data.mkdir()
        bundle.mkdir()
        os.chown(data, 12345, 12345)
        done = run_init(data, bundle, owner="12345:12345")
        assert done.returncode == 0, done.stderr
        made = [data / "keys", data / "keys" / "keyring.json", data / "users.htpasswd"]
        assert {p.stat().st_uid for p in made} == {12345}
        assert (bundle / "bundle.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    finally:
        shutil.rmtree(top)
