"""`registry-auth logins status|reset`: an operator lets a blocked address (or one account from
it) in at once, on the store the service counts in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.cli import run
from app.settings import load_settings
from app.state.attempts import LoginThrottle
from app.state.sqlite import SqliteStore
from tests.unit.test_cli_errors import fails, no_serve

RUNNER = "203.0.113.9"
CONFIG = """issuer: auth
service: registry.test
realm: http://auth.test/token
htpasswd: users.htpasswd
state: {path: state.db}
brute_force: {account_ip_free: 1, account_ip_block: 3, ip_free: 4, ip_block: 6, window: 600}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "users.htpasswd").touch()
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def _throttle(config: Path) -> LoginThrottle:
    settings = load_settings(config)
    return LoginThrottle(SqliteStore(settings.state.path), settings.brute_force, time.time)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert run(list(argv), serve=no_serve) == 0
    return capsys.readouterr().out


def test_status_shows_the_counters_and_reset_lets_the_runner_in(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    throttle = _throttle(config)
    for account in ("ci", "ci", "ci", "deploy", "deploy", "deploy"):
        throttle.failed(account, RUNNER)
    assert throttle.check("ci", RUNNER).blocked
    assert throttle.check("other", RUNNER).blocked  # the address's own counter: 6 = ip_block

    status = _cli(
        capsys, "logins", "status", "--config", str(config), "--ip", RUNNER, "--account", "ci"
    )
    first, second = status.splitlines()
    assert first.startswith(f"address {RUNNER}: 6 failed login(s), the last at ")
    assert "blocked (429) until " in first
    assert second.startswith(f"account 'ci' from {RUNNER}: 3 failed login(s)")

    out = _cli(capsys, "logins", "reset", "--config", str(config), "--ip", RUNNER)
    assert out.startswith(f"forgot the failed logins from {RUNNER}")
    assert not throttle.check("other", RUNNER).blocked
    assert throttle.check("ci", RUNNER).blocked  # its own counter stays
    _cli(capsys, "logins", "reset", "--config", str(config), "--ip", RUNNER, "--account", "ci")
    assert not throttle.check("ci", RUNNER).blocked
    assert throttle.check("deploy", RUNNER).blocked  # only the account named
    status = _cli(capsys, "logins", "status", "--config", str(config), "--ip", RUNNER)
    assert status == f"address {RUNNER}: no failed login on record\n"


def test_an_ipv6_runner_is_found_by_any_address_of_its_64(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _throttle(config).failed("ci", "2001:db8:1:2::5")
    status = _cli(capsys, "logins", "status", "--config", str(config), "--ip", "[2001:db8:1:2::99]")
    assert "1 failed login(s)" in status


def test_bad_input_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--ip 'runner-7': not an IP address" in fails(
        capsys, "logins", "status", "--config", str(config), "--ip", "runner-7"
    )
    config.write_text(CONFIG.replace("window: 600}", "window: 600, enabled: false}"))
    assert fails(capsys, "logins", "reset", "--config", str(config), "--ip", RUNNER).startswith(
        "config: brute_force.enabled"
    )


def test_with_ldap_the_name_is_also_found_as_the_directory_compares_it(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ldap = "auth_backends: [{type: ldap, url: 'ldap://127.0.0.1:1', user_base: 'dc=x'}]\n"
    config.write_text(CONFIG.replace("htpasswd: users.htpasswd\n", ldap))
    throttle = _throttle(config)
    for _ in range(3):
        throttle.failed("carol", RUNNER)  # what the service counts `CAROL` under
    argv = ["--config", str(config), "--ip", RUNNER, "--account", "CAROL"]
    status = _cli(capsys, "logins", "status", *argv).splitlines()
    assert status[1] == f"account 'CAROL' from {RUNNER}: no failed login on record"
    assert status[2].startswith(f"account 'carol' from {RUNNER}: 3 failed login(s)")
    _cli(capsys, "logins", "reset", *argv)
    assert not throttle.check("carol", RUNNER).blocked


def test_a_shared_address_says_so_and_shows_its_accounts(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(
        CONFIG.replace("window: 600}", "window: 600, shared_networks: [203.0.113.0/24]}")
    )
    throttle = _throttle(config)
    for _ in range(3):
        throttle.failed("ci", RUNNER)
    status = _cli(
        capsys, "logins", "status", "--config", str(config), "--ip", RUNNER, "--account", "ci"
    )
    first, second = status.splitlines()
    assert first == f"address {RUNNER}: shared (brute_force.shared_networks): counted per account"
    assert second.startswith(f"account 'ci' from {RUNNER}: 3 failed login(s)")
    assert "blocked (429)" in second


def test_without_the_servers_state_file_nothing_is_claimed(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run elsewhere without --config, the commands read the built-in defaults' state file,
    which does not exist there: they say so, naming the file, and reset claims nothing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    expected = f"{elsewhere / 'registry-auth.db'} does not exist (without --config"
    status = _cli(capsys, "logins", "status", "--ip", RUNNER)
    assert status.startswith(f"no failed login on record: {expected}")
    reset = fails(capsys, "logins", "reset", "--ip", RUNNER, "--account", "ci")
    assert f"state.path: nothing to reset: {expected}" in reset
    assert "forgot" not in reset
    assert not (elsewhere / "registry-auth.db").exists()
    # With the server's config but before its first failed login: the file, and the question.
    other = _cli(capsys, "logins", "status", "--config", str(config), "--ip", RUNNER)
    assert "state.db does not exist (is the config the server's?)" in other
