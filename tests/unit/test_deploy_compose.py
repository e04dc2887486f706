"""deploy/compose, checked offline: Debian's docker-compose validates the file, and the wiring the
README promises holds (etcd v2 on, the registry started by registry-start.sh on the key the
service publishes, the bundle shipped by init, the service built from the repository).

The same files run for real, outside containers, in tests/integration/test_compose_files.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"


def _compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: scripts/test installs Debian's docker-compose"
    # Only PATH and HOME: a developer's COMPOSE_* or PUBLISH_ADDRESS must not change the result.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [binary, "-f", str(path), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors, defaults, relative paths)."""
    result = _compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    assert binary
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("condition: service_completed_successfully", "condition: service_done", "invalid"),
        ('"${PUBLISH_ADDRESS:-127.0.0.1}:5000:5000"', "{port: five}", "invalid"),
        ("  registry-data:\n", "  registry-data: [oops]\n", "must be a mapping"),
        ("\n  bundle:\n", "\n", "no declaration was found"),
    ],
)
def test_docker_compose_rejects_a_broken_copy(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    # The check above is worth something only if the validator fails on a broken file.
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = _compose_config(broken)
    assert result.returncode != 0
    assert message in result.stderr


def test_etcd_serves_the_v2_api(resolved: dict[str, Any]) -> None:
    command = resolved["services"]["etcd"]["command"]
    assert "--enable-v2=true" in command
    assert "--advertise-client-urls=http://etcd:2379" in command


def test_registry_reads_the_key_the_service_publishes(resolved: dict[str, Any]) -> None:
    registry = resolved["services"]["registry"]
    settings = load_settings(COMPOSE_DIR / "config.yaml")
    assert settings.etcd is not None
    assert registry["environment"]["ETCD_KEY"] == settings.etcd.key
    assert registry["environment"]["ETCD_API"] == settings.etcd.api
    assert registry["environment"]["ETCD_ENDPOINT"] in settings.etcd.endpoints
    assert urlsplit(registry["environment"]["ETCD_ENDPOINT"]).hostname == "etcd"


def test_registry_image_runs_the_shared_start_script(resolved: dict[str, Any]) -> None:
    build = resolved["services"]["registry"]["build"]
    dockerfile = Path(build["context"]) / build["dockerfile"]
    assert Path(build["context"]) == ROOT / "deploy"
    text = dockerfile.read_text(encoding="utf-8")
    assert "COPY registry-start.sh /usr/local/bin/registry-start.sh" in text
    assert 'ENTRYPOINT ["/bin/sh", "/usr/local/bin/registry-start.sh"]' in text
    assert "curl jq" in text  # what the script needs


def test_registry_trusts_the_bundle_init_copies(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    registry_config = yaml.safe_load((COMPOSE_DIR / "registry-config.yml").read_text())
    bundle = Path(registry_config["auth"]["token"]["rootcertbundle"])
    registry_mounts = _mounts(services["registry"])
    assert registry_mounts[str(bundle.parent)] == ("bundle", "ro")
    assert _mounts(services["init"])["/bundle"][0] == "bundle"  # init.sh's BUNDLE_DIR default
    assert "auth-data" not in {source for source, _ in registry_mounts.values()}, (
        "the registry must not see the private keys"
    )


def test_service_is_built_from_the_repository_and_shares_its_volume(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    settings = load_settings(COMPOSE_DIR / "config.yaml")
    for name in ("init", "registry-auth", "admin"):
        build = services[name]["build"]
        assert Path(build["context"]) == ROOT
        assert build["dockerfile"] == "Dockerfile"
        mounts = _mounts(services[name])
        assert mounts["/var/lib/registry-auth"][0] == "auth-data"
        assert mounts["/etc/registry-auth/config.yaml"] == (str(COMPOSE_DIR / "config.yaml"), "ro")
    for path in (settings.keys_dir, settings.htpasswd, settings.state.path):
        assert path is not None
        assert Path("/var/lib/registry-auth") in path.parents


def test_ports_and_realm_fit_docker_on_localhost(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    auth = services["registry-auth"]
    realm = urlsplit(auth["environment"]["REGISTRY_AUTH_REALM"])
    # docker talks plain HTTP to localhost without insecure-registries: the README relies on it.
    assert (realm.hostname, realm.port) == ("localhost", 5001)
    assert auth["ports"] == ["127.0.0.1:5001:5001/tcp"]
    assert services["registry"]["ports"] == ["127.0.0.1:5000:5000/tcp"]
    settings = load_settings(COMPOSE_DIR / "config.yaml")
    assert settings.listen == "0.0.0.0:5001"
    assert auth["read_only"] is True
    # The CLI sees the service's settings: `admin registry-check` compares the same realm.
    admin = services["admin"]["environment"]
    assert admin["REGISTRY_AUTH_REALM"] == auth["environment"]["REGISTRY_AUTH_REALM"]
    assert admin["REGISTRY_AUTH_CONFIG"] == auth["environment"]["REGISTRY_AUTH_CONFIG"]


def test_services_start_in_order(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert services["registry-auth"]["depends_on"]["init"] == {
        "condition": "service_completed_successfully"
    }
    assert services["registry"]["depends_on"]["registry-auth"] == {"condition": "service_healthy"}
    assert services["admin"]["profiles"] == ["admin"]  # `up` never starts it


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) from docker-compose's resolved `volumes` list."""
    mounts = {}
    for entry in service["volumes"]:
        source, target, mode = entry.rsplit(":", 2) if entry.count(":") >= 2 else (*entry, "rw")
        mounts[target] = (source, mode)
    return mounts
