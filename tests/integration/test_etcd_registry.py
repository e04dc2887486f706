"""End to end, LAIN style: the registry takes realm/issuer/service from the etcd key that our
service published, via deploy/registry-start.sh, and then serves skopeo with our tokens."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.support.authserver import AuthServer, start_auth_server
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.support.oci import OciImage, manifest_digest, read_layer_file
from tests.integration.support.procs import (
    free_port,
    require_program,
    start_process,
    wait_for_http,
)
from tests.integration.support.registry import Registry, TokenAuth, write_registry_config
from tests.integration.support.skopeo import Skopeo
from tests.integration.support.stack import ALICE, USERS

START_SCRIPT = Path(__file__).parents[2] / "deploy" / "registry-start.sh"
KEY = "/lain/config/auth/registry"
# What the registry's config file says: the script's environment must override all three.
PLACEHOLDER = TokenAuth("http://placeholder.invalid/token", "placeholder", "placeholder", Path())


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path / "etcd")
    yield server
    server.stop()


def start_registry_from_etcd(
    workdir: Path, bundle: Path, etcd_server: EtcdServer, api: str, wait: int = 20
) -> Registry:
    port, secret = free_port(), secrets.token_hex(16)
    auth = TokenAuth(PLACEHOLDER.realm, PLACEHOLDER.service, PLACEHOLDER.issuer, bundle)
    config = write_registry_config(workdir / "config.yml", port, auth, workdir / "storage", secret)
    env = {
        "ETCD_ENDPOINT": etcd_server.url,
        "ETCD_KEY": KEY,
        "ETCD_API": api,
        "ETCD_WAIT": str(wait),
        "REGISTRY_BIN": require_program("docker-registry", package="docker-registry"),
    }
    process = start_process(
        "registry-start", ["sh", str(START_SCRIPT), str(config)], workdir / "logs", env=env
    )
    wait_for_http(process, f"http://127.0.0.1:{port}/v2/")
    return Registry(port, auth, workdir, process, secret)


def challenge(registry: Registry) -> dict[str, str]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        response = client.get(f"{registry.url}/v2/")
    assert response.status_code == 401, response.text
    return dict(re.findall(r'(\w+)="([^"]*)"', response.headers["www-authenticate"]))


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_registry_configured_from_etcd_serves_a_skopeo_pull(
    api: str,
    tmp_path: Path,
    etcd_server: EtcdServer,
    skopeo: Skopeo,
    make_image: Callable[..., OciImage],
) -> None:
    auth: AuthServer = start_auth_server(
        tmp_path / "auth",
        users=USERS,
        issuer="auth server",
        service="lain.test",
        extra_settings={"etcd": {"endpoints": [etcd_server.url], "key": KEY, "api": api}},
    )
    registry = None
    try:
        registry = start_registry_from_etcd(tmp_path / "registry", auth.bundle, etcd_server, api)
        # The registry's challenge carries the values from etcd, not its config file's.
        assert challenge(registry) == {
            "realm": auth.realm,
            "service": "lain.test",
        }
        image = make_image("1.0")
        pushed = skopeo.copy(image.ref, registry.ref("team/app", "1.0"), dest_creds=ALICE)
        assert pushed.ok, f"{pushed}\n{registry.log()}\n{auth.log()}"
        pulled = tmp_path / "pulled"
        result = skopeo.copy(registry.ref("team/app", "1.0"), f"oci:{pulled}:1.0", src_creds=ALICE)
        assert result.ok, f"{result}\n{registry.log()}"
        assert manifest_digest(pulled, "1.0") == image.manifest_digest
        assert read_layer_file(pulled, "1.0") == image.content
    finally:
        if registry is not None:
            registry.stop()
        auth.stop()


def test_start_script_refuses_to_run_the_registry_without_the_key(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    # LAIN's registry ran without auth when the key was missing; ours must not start at all.
    config = tmp_path / "config.yml"
    config.write_text("version: 0.1\n", encoding="utf-8")
    env = {"ETCD_ENDPOINT": etcd_server.url, "ETCD_WAIT": "1", "REGISTRY_BIN": "/bin/false"}
    result = subprocess.run(
        ["sh", str(START_SCRIPT), str(config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "refusing to start the registry without token auth" in result.stderr
