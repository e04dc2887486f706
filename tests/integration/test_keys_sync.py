"""Key rotation in Kubernetes without a restart: the pod's keys come from a Secret volume through
`keys sync` (as deploy/kubernetes runs it), and the running service follows each step the
operator applies to the Secret."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import jwt

from tests.integration.support.authserver import AuthServer, app_command, start_auth_server
from tests.integration.support.procs import run_checked, start_process, wait_for_http
from tests.kubelet import publish_secret

USERS = {"alice": "alice-password"}


def admin_keys(server: AuthServer, keys_dir: Path, *argv: str) -> str:
    """A `keys` command on the operator's copy; returns its last line (a kid)."""
    result = run_checked(
        app_command(
            "keys", *argv, "--keys-dir", str(keys_dir), "--config", str(server.config_path)
        ),
        what=f"registry-auth keys {argv[0]}",
    )
    return result.stdout.strip().splitlines()[-1]


def token_kid(server: AuthServer) -> str:
    answer = server.token(["repository:team/app:pull"], auth=("alice", USERS["alice"]))
    assert answer.status_code == 200, answer.text
    return str(jwt.get_unverified_header(answer.json()["token"])["kid"])


def published_kids(server: AuthServer) -> set[str]:
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=5, trust_env=False).json()
    return {key["kid"] for key in jwks["keys"]}


def test_a_running_service_follows_each_rotation_step_applied_to_the_secret(
    tmp_path: Path,
) -> None:
    server = start_auth_server(
        tmp_path / "pod", users=USERS, extra_settings={"reload_interval": 0.2}
    )
    admin, secret = tmp_path / "admin-keys", tmp_path / "secret"
    shutil.copytree(server.keys_dir, admin)
    publish_secret(admin, secret)
    sync = start_process(
        "keys-sync",
        app_command(
            "keys", "sync", "--from", str(secret), "--keys-dir", str(server.keys_dir),
            "--interval", "1s",
        ),
        tmp_path / "logs",
    )  # fmt: skip
    try:
        old = server.kid
        assert token_kid(server) == old

        new = admin_keys(server, admin, "add")
        publish_secret(admin, secret)
        wait_for_http(
            server.process,
            f"{server.url}/.well-known/jwks.json",
            ready=lambda r: new in {k["kid"] for k in r.json()["keys"]},
        )
        assert token_kid(server) == old  # published, not signing

        admin_keys(server, admin, "promote", new)
        publish_secret(admin, secret)
        wait_for_http(
            server.process, f"{server.url}/readyz", ready=lambda r: r.json()["active_kid"] == new
        )
        assert token_kid(server) == new

        admin_keys(server, admin, "retire", old, "--force")
        publish_secret(admin, secret)
        wait_for_http(
            server.process,
            f"{server.url}/.well-known/jwks.json",
            ready=lambda r: old not in {k["kid"] for k in r.json()["keys"]},
        )
        assert published_kids(server) == {new}
        key_files = sorted(p.name for p in server.keys_dir.iterdir() if p.suffix == ".key")
        assert key_files == [f"{new.replace(':', '')[:16].lower()}.key"]
        assert server.process.running  # no restart: the same process all along
    finally:
        status = sync.stop()
        server.stop()
    assert status == 0, sync.log()  # SIGTERM, as when the pod stops
    assert "copied the key ring" in sync.stdout_path.read_text()
