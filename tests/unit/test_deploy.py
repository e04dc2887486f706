"""The deployment artifacts, checked offline: Dockerfile lint, Kubernetes schemas, LAIN manifest."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from app.cli import build_parser
from app.cli_common import parse_duration
from app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The kustomization and the service's config, which it makes into a ConfigMap.
NOT_MANIFESTS = {"kustomization.yaml", "config.yaml"}
KUBERNETES_VERSION = "1.30.0"  # pinned: the oldest release the manifests promise to support


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(path).exists(), f"{name} is missing: scripts/test installs it with the test extras"
    return path


DOCKERFILES = ["Dockerfile", "deploy/compose/registry.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_is_lint_clean(dockerfile: str) -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(ROOT / dockerfile)],
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
    # The check follows the config's `listen` and `tls` (it was http://127.0.0.1:5001 fixed).
    (check,) = [line for line in text.splitlines() if line.strip().startswith("CMD [")]
    argv = json.loads(check.strip().removeprefix("CMD "))
    assert argv[:2] == ["registry-auth", "healthcheck"]
    build_parser().parse_args(argv[1:])  # a command the CLI has
    assert 'ENTRYPOINT ["registry-auth", "serve"]' in text  # exec form: signals reach uvicorn
    assert "\nSTOPSIGNAL SIGTERM\n" in text  # uvicorn drains in-flight requests on SIGTERM
    assert "keys/" not in text  # no keys baked in


def _build_context() -> list[str]:
    """What the build stage COPYs from the context (sources of COPY lines without --from)."""
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources.extend(line.split()[1:-1])
    return sources


def test_docker_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert sorted(_build_context()) == sorted(allowed)
    assert "keys" not in allowed


def test_dockerfile_python_satisfies_requires_python() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    images = re.findall(r"^FROM python:(\d+\.\d+)-", (ROOT / "Dockerfile").read_text(), re.M)
    assert images
    assert all(SpecifierSet(project["requires-python"]).contains(v) for v in images)


def test_the_dockerfile_installs_the_dependencies_pyproject_lists(tmp_path: Path) -> None:
    """The image installs them from pyproject.toml alone (a layer a code change reuses), by a
    `python -c` command run here as the build's shell runs it."""
    (command,) = re.findall(r"^RUN (python -c .*) > requirements\.txt", _dockerfile(), re.M)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    command = command.replace("python", shlex.quote(sys.executable), 1)  # the image's python
    listed = subprocess.run(
        ["/bin/sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert listed == project["dependencies"]
    assert "--no-deps ." in _dockerfile()  # then the package itself, on top of them
    assert "/wheels" not in _dockerfile()  # no wheels copied into a layer of the image


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_files_the_dockerfile_copies_build_the_package(tmp_path: Path) -> None:
    # The image builds a wheel from exactly these files: a package file or a pyproject
    # reference outside them (a LICENSE, package data) would break the image, not the checkout.
    context = tmp_path / "context"
    context.mkdir()
    for source in _build_context():
        copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy2
        copy(ROOT / source, context / source)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheels").glob("registry_auth-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "registry-auth = app.main:main" in archive.read(entry_points).decode()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "app").rglob("*.py")}
    assert modules <= names, sorted(modules - names)


@pytest.mark.parametrize(
    "manifest",
    sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name not in NOT_MANIFESTS),
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


def test_kustomization_lists_every_manifest_but_no_secret() -> None:
    """An apply of a placeholder Secret replaced the real users file: every login failed."""
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - NOT_MANIFESTS
    assert listed == {name for name in present if not name.endswith(".example.yaml")}
    kinds = {yaml.safe_load((KUBERNETES / name).read_text())["kind"] for name in listed}
    assert "Secret" not in kinds


def test_kubernetes_deployment_is_hardened() -> None:
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Not Kubernetes' 1 s: a pod busy with a login storm is not a dead one.
    assert container["livenessProbe"]["timeoutSeconds"] >= 3
    for each in (*pod["initContainers"], *pod["containers"]):
        assert each["securityContext"]["readOnlyRootFilesystem"] is True, each["name"]
        assert each["securityContext"]["allowPrivilegeEscalation"] is False, each["name"]
        assert each["securityContext"]["capabilities"]["drop"] == ["ALL"], each["name"]
        assert each["resources"]["limits"]["memory"], each["name"]


def test_lain_manifest_serves_the_console_realm_path() -> None:
    lain = yaml.safe_load((ROOT / "deploy" / "lain" / "lain.yaml").read_text())
    assert lain["appname"] == "registry-auth"
    assert lain["web"]["cmd"].startswith("registry-auth serve")
    assert any(m.endswith("/api/v1/authorize/registry") for m in lain["web"]["mountpoint"])
    assert lain["web"]["healthcheck"] == "/healthz"


def _configmap_config(tmp_path: Path) -> Path:
    """The Kubernetes config.yaml, outside the checkout: its relative paths would resolve there."""
    path = tmp_path / "config.yaml"
    shutil.copy(KUBERNETES / "config.yaml", path)
    return path


def test_kubernetes_config_is_a_generated_configmap_that_rolls_the_pods() -> None:
    """A ConfigMap edited in place reached no running pod (the config is read at start): the
    kustomization generates it from config.yaml, its name hashed, so an edit is a rollout."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["config.yaml"]
    assert kustomization.get("generatorOptions", {}).get("disableNameSuffixHash") is not True
    assert generator.get("options", {}).get("disableNameSuffixHash") is not True
    pod = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generator["name"]


def test_kubernetes_commands_in_the_pod_find_the_config() -> None:
    """`kubectl exec ... registry-auth tokens revoke` read the image's REGISTRY_AUTH_CONFIG
    (/etc/registry-auth/config.yaml, not mounted) while the server had `--config`: every
    command run in the pod failed. The variable names the mounted file, for both."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "REGISTRY_AUTH_CONFIG=/etc/registry-auth/config.yaml" in dockerfile
    pod = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    service = next(c for c in pod["containers"] if c["name"] == "registry-auth")
    assert "--config" not in service.get("args", [])
    env = {e["name"]: e["value"] for e in service["env"]}
    mounts = {m["name"]: Path(m["mountPath"]) for m in service["volumeMounts"]}
    config = Path(env["REGISTRY_AUTH_CONFIG"])
    assert config.parent == mounts["config"]
    assert config.name == "config.yaml"  # the file the ConfigMap is made of


def test_kubernetes_config_matches_the_settings_and_the_mounts(tmp_path: Path) -> None:
    settings = load_settings(_configmap_config(tmp_path))
    container = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())["spec"]["template"][
        "spec"
    ]["containers"][0]
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    assert settings.keys_dir == mounts["keys"]
    assert settings.htpasswd is not None
    assert settings.htpasswd.parent == mounts["users"]
    # Several replicas and a read-only root filesystem: refresh tokens cannot live in SQLite.
    assert settings.state.backend == "etcd"
    assert settings.realm.startswith("https://")
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert settings.listen == f"0.0.0.0:{port}"


def test_kubernetes_keys_reach_the_service_with_mode_0600_and_follow_the_secret() -> None:
    # Secret files are root's; with fsGroup they are 0440, which the key store refuses:
    # `keys sync` copies the ring with 0600 into the volume the service reads, once before it
    # starts (init container) and then whenever the Secret changes (a container beside it).
    pod = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    (init,) = pod["initContainers"]
    follower = next(c for c in pod["containers"] if c["name"] == "keys-sync")
    service = next(c for c in pod["containers"] if c["name"] == "registry-auth")
    for container, once in ((init, True), (follower, False)):
        argv = build_parser().parse_args([*container["command"][1:], *container.get("args", [])])
        assert (argv.keys_command, argv.once) == ("sync", once)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert Path(mounts["keys-secret"]["mountPath"]) == argv.source
        assert Path(mounts["keys"]["mountPath"]) == argv.keys_dir
        assert not mounts["keys"].get("readOnly")
    service_mounts = {m["name"]: m for m in service["volumeMounts"]}
    assert service_mounts["keys"]["readOnly"] is True
    assert "keys-secret" not in service_mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["keys"]["emptyDir"]["medium"] == "Memory"
    assert volumes["keys-secret"]["secret"]["secretName"] == "registry-auth-keys"


def test_kubernetes_retire_waits_for_every_pod_to_follow_the_secret(tmp_path: Path) -> None:
    # After `keys promote`, a pod signs with the old key until kubelet refreshes its Secret
    # volume (its sync period: 60 s by default), `keys sync` copies it and the service reloads:
    # `keys retire` must wait that much longer, or the last tokens of the old key fail.
    settings = load_settings(_configmap_config(tmp_path))
    pod = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    follower = next(c for c in pod["containers"] if c["name"] == "keys-sync")
    argv = build_parser().parse_args([*follower["command"][1:], *follower.get("args", [])])
    kubelet_sync_period = 60
    follows_within = kubelet_sync_period + parse_duration(argv.interval, "--interval")
    assert settings.key_propagation >= follows_within + settings.reload_interval


def test_lain_config_example_matches_the_settings_and_lain() -> None:
    lain = yaml.safe_load((ROOT / "deploy" / "lain" / "lain.yaml").read_text())
    settings = load_settings(ROOT / "deploy" / "lain" / "config.example.yaml")
    assert settings.etcd is not None
    assert (settings.etcd.key, settings.etcd.api) == ("/lain/config/auth/registry", "v2")
    assert settings.realm_path == "/api/v1/authorize/registry/"
    assert settings.issuer == "auth server"  # LAIN's registry expects LAIN's issuer
    (mountpoint,) = lain["web"]["mountpoint"]
    assert settings.realm.split("://", 1)[1].rstrip("/") == mountpoint
    assert settings.listen == f"0.0.0.0:{lain['web']['port']}"
    volume = Path(lain["web"]["cloud_volumes"]["dirs"][0])
    assert volume in settings.keys_dir.parents


def test_production_deployments_serve_with_a_worker_per_cpu(tmp_path: Path) -> None:
    # `workers: 1` (one uvicorn process) serves ~2-4x fewer tokens than granian with a worker
    # per CPU (README, Performance): the production artifacts must not run the default.
    unit = (ROOT / "deploy" / "systemd" / "registry-auth.service").read_text()
    (start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert start.split()[1:] == ["serve", "--workers", "0"]
    for config in (_configmap_config(tmp_path), ROOT / "deploy" / "lain" / "config.example.yaml"):
        assert load_settings(config).workers == 2, config  # fits the 256 MiB memory limits
    lain = yaml.safe_load((ROOT / "deploy" / "lain" / "lain.yaml").read_text())
    assert "--workers" not in lain["web"]["cmd"]  # the config's `workers` holds


def test_deployments_wait_longer_than_the_service_drains(tmp_path: Path) -> None:
    """Each supervisor's SIGKILL comes after `shutdown_timeout`, with time to close: else a
    request in flight is cut without its answer (compose's own default is 10 s)."""
    drain = load_settings(_configmap_config(tmp_path)).shutdown_timeout
    pod = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())["spec"]["template"]
    unit = (ROOT / "deploy" / "systemd" / "registry-auth.service").read_text()
    (stop,) = [line for line in unit.splitlines() if line.startswith("TimeoutStopSec=")]
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    graces = {
        "kubernetes": pod["spec"]["terminationGracePeriodSeconds"],
        "systemd": int(stop.removeprefix("TimeoutStopSec=")),
        "compose": parse_duration(compose["services"]["registry-auth"]["stop_grace_period"]),
    }
    assert all(grace >= drain + 5 for grace in graces.values()), (drain, graces)
