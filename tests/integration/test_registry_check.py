"""`registry-auth registry-check` against the real docker-registry 2.8: what it says at each step
of the rotation runbook, and what it says of a registry wired to another issuer and service."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from app.keys.model import KeyState
from app.keys.store import read_entries
from tests.integration.support.authserver import AuthServer, app_command, start_auth_server
from tests.integration.support.procs import (
    ManagedProcess,
    free_port,
    run_checked,
    start_process,
    wait_for_http,
)
from tests.integration.support.registry import TokenAuth, start_registry


def registry_check(auth: AuthServer, *urls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        app_command("registry-check", "--config", str(auth.config_path), *urls),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def keys(auth: AuthServer, *argv: str) -> str:
    result = run_checked(
        app_command("keys", *argv, "--config", str(auth.config_path)), what=f"keys {argv[0]}"
    )
    return result.stdout.strip().splitlines()[-1]


def test_it_says_when_a_promote_is_safe(tmp_path: Path) -> None:
    auth = start_auth_server(tmp_path / "auth")
    shipped = tmp_path / "registry-bundle.pem"  # what the registry host has of bundle.pem
    shutil.copyfile(auth.bundle, shipped)
    registry = start_registry(
        tmp_path / "registry", TokenAuth(auth.realm, auth.service, auth.issuer, shipped)
    )
    try:
        first = registry_check(auth, registry.url)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"ok       realm: {auth.realm}" in first.stdout
        assert f"ok       service: {auth.service}" in first.stdout
        assert f"ok       active key {auth.kid}: accepted" in first.stdout
        assert first.stdout.strip().endswith("no problem with the 1 registry checked")

        new = keys(auth, "add")
        before_shipping = registry_check(auth, registry.url)
        assert before_shipping.returncode == 1
        assert f"problem  next key {new}: not trusted yet" in before_shipping.stdout
        assert before_shipping.stdout.strip().endswith("1 problem(s)")

        shutil.copyfile(auth.bundle, shipped)
        registry.restart()
        shipped_now = registry_check(auth, registry.url)
        assert shipped_now.returncode == 0, shipped_now.stdout
        assert f"next key {new}: accepted: `keys promote` is safe" in shipped_now.stdout

        keys(auth, "promote", new)
        promoted = registry_check(auth, registry.url)
        assert promoted.returncode == 0, promoted.stdout
        assert f"ok       active key {new}: accepted" in promoted.stdout
        assert f"ok       retiring key {auth.kid}: still accepted" in promoted.stdout
    finally:
        registry.stop()
        auth.stop()


def test_it_names_a_registry_wired_elsewhere_and_one_it_cannot_reach(tmp_path: Path) -> None:
    auth = start_auth_server(tmp_path / "auth")
    elsewhere = TokenAuth(auth.realm, "other.registry", "another issuer", auth.bundle)
    registry = start_registry(tmp_path / "registry", elsewhere)
    nobody = f"http://127.0.0.1:{free_port()}"
    try:
        result = registry_check(auth, registry.url, nobody)
    finally:
        registry.stop()
        auth.stop()
    assert result.returncode == 1
    out = result.stdout
    assert f"ok       realm: {auth.realm}" in out
    assert (
        f"problem  service: the registry says 'other.registry', this service '{auth.service}'"
        in out
    )
    # Its keys are not judged: a token for our service would be refused for its audience alone.
    assert "problem  keys: not checked until the service matches" in out
    assert auth.kid not in out
    assert f"{nobody}:\n  problem  cannot reach {nobody}/v2/" in out
    assert out.strip().endswith("3 problem(s)")


def _wait_for_output(process: ManagedProcess, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = process.stdout_path.read_text(encoding="utf-8")
        if text in out:
            return out
        assert process.running, process.log()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not printed in {timeout} s\n{process.log()}")


def test_rotate_promotes_once_the_registry_trusts_the_new_key(tmp_path: Path) -> None:
    auth = start_auth_server(tmp_path / "auth", extra_settings={"reload_interval": 0.2})
    shipped = tmp_path / "registry-bundle.pem"
    shutil.copyfile(auth.bundle, shipped)
    registry = start_registry(
        tmp_path / "registry", TokenAuth(auth.realm, auth.service, auth.issuer, shipped)
    )
    rotate = start_process(
        "keys-rotate",
        app_command(
            "keys", "rotate", "--config", str(auth.config_path), "--promote-when-trusted",
            registry.url, "--check-every", "1s", "--give-up-after", "2m",
        ),
        tmp_path / "logs",
    )  # fmt: skip
    try:
        out = _wait_for_output(rotate, "0 of 1 registries trust")
        new = next(line.split()[3] for line in out.splitlines() if line.startswith("added "))
        time.sleep(2)  # two more looks: still not trusted, so not promoted
        assert {e.kid: e.state for e in read_entries(auth.keys_dir)}[new] is KeyState.NEXT

        shutil.copyfile(auth.bundle, shipped)  # ship the bundle and restart the registry
        registry.restart()
        assert rotate.popen.wait(60) == 0, rotate.log()
        assert {e.kid: e.state for e in read_entries(auth.keys_dir)}[new] is KeyState.ACTIVE
        assert "every registry (1) trusts" in rotate.stdout_path.read_text(encoding="utf-8")
        wait_for_http(
            auth.process, f"{auth.url}/readyz", ready=lambda r: r.json()["active_kid"] == new
        )
        assert registry_check(auth, registry.url).returncode == 0
    finally:
        rotate.stop()
        registry.stop()
        auth.stop()


def test_rotate_gives_up_with_the_key_still_next(tmp_path: Path) -> None:
    auth = start_auth_server(tmp_path / "auth")
    nobody = f"http://127.0.0.1:{free_port()}"
    try:
        result = subprocess.run(
            app_command(
                "keys", "rotate", "--config", str(auth.config_path), "--promote-when-trusted",
                nobody, "--give-up-after", "0s",
            ),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        auth.stop()
    assert result.returncode == 2
    assert f"waiting for {nobody} (unreachable)" in result.stdout
    keys = auth.workdir / "keys"  # the refusal names the ring the key stays next in
    assert result.stderr.startswith(f"registry-auth: error: {keys}: gave up after 0 s: {nobody} ")
    assert f" --config {auth.config_path}` once `registry-check` shows" in result.stderr
    assert [e.state for e in read_entries(auth.keys_dir)] == [KeyState.ACTIVE, KeyState.NEXT]
