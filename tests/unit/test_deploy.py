"""The deployment artifacts, checked offline: Dockerfile lint, Kubernetes schemas, LAIN manifest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # pinned: the oldest release the manifests promise to support


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(path).exists(), f"{name} is missing: scripts/test installs it with the test extras"
    return path


def test_dockerfile_is_lint_clean() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && apt-get install curl\n")
    result = subprocess.run([_tool("hadolint"), str(bad)], capture_output=True, check=False)
    assert result.returncode != 0


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in text
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert 'ENTRYPOINT ["registry-auth", "serve"]' in text
    assert "keys/" not in text  # no keys baked in


@pytest.mark.parametrize(
    "manifest",
    sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml"),
)
def test_kubernetes_manifest_validates(manifest: str) -> None:
    result = subprocess.run(
        [
            _tool("kubernetes-validate"),
            "--strict",
            "-k",
            KUBERNETES_VERSION,
            str(KUBERNETES / manifest),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_kubernetes_deployment_is_hardened() -> None:
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "fsGroup" not in pod["securityContext"]  # would make key files group-readable
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]


def test_lain_manifest_serves_the_console_realm_path() -> None:
    lain = yaml.safe_load((ROOT / "deploy" / "lain" / "lain.yaml").read_text())
    assert lain["appname"] == "registry-auth"
    assert lain["web"]["cmd"].startswith("registry-auth serve")
    assert any(m.endswith("/api/v1/authorize/registry") for m in lain["web"]["mountpoint"])
    assert lain["web"]["healthcheck"] == "/healthz"
