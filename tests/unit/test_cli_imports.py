"""A command loads what it needs and no more: `--help` and `--version` none of the command
modules, `keys sync` (a pod's sidecar, running for days) neither the settings nor an HTTP
client. Each case runs the real `registry-auth` in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import GROUPS
from app.keys.model import Algorithm
from app.keys.store import generate_key, load_keyring
from tests.kubelet import publish_secret

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"pydantic", "pydantic_settings", "httpx", "etcd", "fastapi", "yaml"}

# Runs the command line as `registry-auth` does, then reports its exit status and the
# top-level packages and app modules it loaded.
PROBE = """
import json, sys
from app.main import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
names = set(sys.modules)
loaded = sorted({name.split(".")[0] for name in names} | {n for n in names if n.startswith("app.")})
print(json.dumps({"status": status, "loaded": loaded}), file=sys.stderr)
"""


def run_cli(*argv: str) -> tuple[int, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["status"], set(report["loaded"]), done.stdout


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_load_no_command_module(option: str) -> None:
    status, loaded, out = run_cli(option)
    assert status == 0
    assert not loaded & HEAVY, loaded & HEAVY
    assert not {group.module for group in GROUPS.values()} & loaded
    assert "app.cli_server" not in loaded
    if option == "--help":
        assert all(name in out for name in ["serve", "registry-config", *GROUPS]), out


def test_a_group_loads_its_own_module_only() -> None:
    status, loaded, out = run_cli("acl", "--help")
    assert status == 0
    assert "explain" in out  # the group's own subcommands are there
    assert "app.cli_acl" in loaded
    assert not {"app.cli_keys", "app.cli_users", "app.cli_etcd", "app.cli_robots"} & loaded


def test_keys_sync_loads_neither_the_settings_nor_an_http_client(tmp_path: Path) -> None:
    kid = generate_key(tmp_path / "admin", Algorithm.ES256).kid
    publish_secret(tmp_path / "admin", tmp_path / "secret")
    status, loaded, out = run_cli(
        "keys", "sync", "--once", "--from", str(tmp_path / "secret"),
        "--keys-dir", str(tmp_path / "pod"),
    )  # fmt: skip
    assert status == 0, out
    assert load_keyring(tmp_path / "pod").active.kid == kid
    assert not loaded & HEAVY, loaded & HEAVY
    assert "app.settings" not in loaded


def test_keys_sync_without_keys_dir_reads_it_from_the_config(tmp_path: Path) -> None:
    generate_key(tmp_path / "admin", Algorithm.ES256)
    publish_secret(tmp_path / "admin", tmp_path / "secret")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"realm: https://auth.example/token\nissuer: t\nservice: s\nkeys_dir: {tmp_path / 'pod'}\n",
        encoding="utf-8",
    )
    status, loaded, out = run_cli(
        "keys", "sync", "--once", "--from", str(tmp_path / "secret"), "--config", str(config)
    )
    assert status == 0, out
    assert load_keyring(tmp_path / "pod").keys
    assert "app.settings" in loaded
