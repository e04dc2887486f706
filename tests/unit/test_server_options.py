"""`serve --workers` and the process model it picks (no server is started here)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.api.config_refusal import config_refused, set_config_refused
from app.api.config_reread import changed_settings, next_settings, reread_config
from app.api.server import server_options
from app.api.workers import use_worker_scheduling
from app.cli import run
from app.errors import ConfigError
from app.pools import default_threads
from app.settings import Settings, load_settings
from tests.unit.test_cli import CONFIG, Recorder


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG + "workers: 3\n")
    (tmp_path / "users.htpasswd").touch()
    return path


def test_the_workers_flag_overrides_the_setting(config: Path) -> None:
    recorder = Recorder()
    assert run(["serve", "--config", str(config), "--workers", "0"], serve=recorder) == 0
    settings, _, _ = recorder.calls[0]
    assert settings.workers == 0
    assert server_options(settings).workers == default_threads()  # 0: one per CPU


def test_without_the_flag_the_setting_counts(config: Path) -> None:
    recorder = Recorder()
    assert run(["serve", "--config", str(config)], serve=recorder) == 0
    assert server_options(recorder.calls[0][0], "::1", 6000).workers == 3


def test_a_bad_workers_value_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run(["serve", "--config", str(config), "--workers", "-2"], serve=Recorder())
    assert "whole number" in capsys.readouterr().err


def test_options_take_host_and_port_from_listen(settings: Settings) -> None:
    options = server_options(settings.model_copy(update={"listen": "[::1]:7001"}))
    assert (options.host, options.port, options.workers) == ("::1", 7001, 1)


def test_negative_workers_in_the_config_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG + "workers: -1\n")
    with pytest.raises(Exception, match="workers"):
        load_settings(path)


def test_batch_scheduling_that_the_system_refuses_is_a_warning_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING, logger="app.api.workers"):
        use_worker_scheduling("batch")
    assert "worker_scheduling: batch is not available here" in caplog.text
    assert "Operation not permitted" in caplog.text


def test_normal_scheduling_leaves_the_thread_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda *args: calls.append(args))
    use_worker_scheduling("normal")
    assert calls == []


def test_worker_scheduling_is_batch_unless_set_and_takes_only_the_two_policies(
    config: Path,
) -> None:
    assert load_settings(config).worker_scheduling == "batch"
    config.write_text(config.read_text() + "worker_scheduling: realtime\n")
    with pytest.raises(ConfigError, match="worker_scheduling"):
        load_settings(config)


FROZEN_COUNT = """
import gc, sys
from app.api.workers import worker_app
from app.settings import load_settings
before = gc.get_freeze_count()
overrides = {"keys_dir": sys.argv[1], "htpasswd": None, "realm": "http://a.test/token"}
worker_app(load_settings(overrides=overrides))
print(before, gc.get_freeze_count())
"""


def _counts_in_own_process(script: str, keys_dir: Path, cwd: Path) -> list[int]:
    """The numbers `script` prints, run in a fresh interpreter with this keys directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_AUTH_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(keys_dir)],
        capture_output=True, text=True, timeout=60, env=env, check=False, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [int(word) for word in done.stdout.split()]


def test_a_worker_freezes_its_startup_heap_out_of_the_collectors_full_passes(
    rsa_keys_dir: Path, tmp_path: Path
) -> None:
    """In a process of its own, as a worker is: freezing the test process would keep every
    later test's garbage cycles."""
    before, after = _counts_in_own_process(FROZEN_COUNT, rsa_keys_dir, tmp_path)
    assert before == 0
    assert after > 20_000  # the modules, the app and its loaded files


def test_a_workers_flag_beyond_the_settings_limit_names_the_flag(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    assert run(["serve", "--config", str(config), "--workers", "100000"], serve=recorder) == 2
    assert recorder.calls == []
    err = capsys.readouterr().err
    assert err == (
        "registry-auth: error: config: --workers: Input should be less than or equal to 512 "
        "(overrides `workers`)\n"
    )


FROZEN_BEFORE_FORK = """
import gc, sys
from granian.server import MPServer
from app.api.server import server_options
from app.api.supervisor import run_granian
from app.settings import load_settings
def serve(self, *args, **kwargs):  # where granian forks its workers: stop and report instead
    print(gc.get_freeze_count())
MPServer.serve = serve
overrides = {"keys_dir": sys.argv[1], "htpasswd": None, "realm": "http://a.test/token",
             "workers": 2, "listen": "127.0.0.1:9"}
settings = load_settings(overrides=overrides)
run_granian(settings, server_options(settings))
"""


def test_the_main_process_freezes_its_heap_before_granian_forks_the_workers(
    rsa_keys_dir: Path, tmp_path: Path
) -> None:
    """What the workers inherit is out of their collector's passes, so a pass does not copy
    the pages they share with the main process (PSS, docs/performance.md)."""
    (frozen,) = _counts_in_own_process(FROZEN_BEFORE_FORK, rsa_keys_dir, tmp_path)
    assert frozen > 20_000


@pytest.mark.parametrize("port", ["0", "99999", "-1"])
def test_a_port_outside_1_to_65535_names_the_flag(
    config: Path, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    recorder = Recorder()
    assert run(["serve", "--config", str(config), "--port", port], serve=recorder) == 2
    assert recorder.calls == []
    assert capsys.readouterr().err == (
        f"registry-auth: error: config: --port: {port} is not a port (1-65535)\n"
    )


def test_host_and_port_become_the_listen_address(config: Path) -> None:
    recorder = Recorder()
    argv = ["serve", "--config", str(config), "--host", "::1", "--port", "6001"]
    assert run(argv, serve=recorder) == 0
    settings, _, _ = recorder.calls[0]
    assert settings.listen == "[::1]:6001"
    assert (server_options(settings).host, server_options(settings).port) == ("::1", 6001)


ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - the value of --host; nothing binds in these tests


@pytest.mark.parametrize(
    ("flags", "realm"),
    [
        (["--port", "5941"], "http://127.0.0.1:5941/token"),
        (["--host", ANY_ADDRESS, "--port", "7001"], "http://127.0.0.1:7001/token"),
        (["--host", "::", "--port", "7000"], "http://[::1]:7000/token"),
        (["--host", "192.0.2.7", "--port", "7000"], "http://192.0.2.7:7000/token"),
    ],
)
def test_the_development_realm_follows_host_and_port(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    realm: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    recorder = Recorder()
    assert run(["serve", *flags], serve=recorder) == 0
    settings, _, _ = recorder.calls[0]
    assert settings.realm == realm
    assert f'realm: "{realm}"' in capsys.readouterr().err  # the registry block


def test_a_configured_realm_naming_the_replaced_address_gets_a_warning(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    assert run(["serve", "--config", str(config), "--port", "5941"], serve=recorder) == 0
    settings, _, _ = recorder.calls[0]
    assert settings.realm == "http://127.0.0.1:5001/api/v1/authorize/registry/"  # as configured
    assert (
        "warning: realm http://127.0.0.1:5001/api/v1/authorize/registry/ names 127.0.0.1:5001"
        in (capsys.readouterr().err)
    )
    config.write_text(config.read_text() + 'listen: "0.0.0.0:8080"\n')  # behind a proxy, say
    assert run(["serve", "--config", str(config), "--port", "5941"], serve=recorder) == 0
    assert "warning" not in capsys.readouterr().err


def test_reread_applies_the_same_command_line_overrides(config: Path) -> None:
    recorder = Recorder()
    argv = ["serve", "--config", str(config), "--workers", "2", "--port", "6001"]
    assert run(argv, serve=recorder) == 0
    config.write_text(config.read_text() + "token_ttl: 900\n")
    assert recorder.reread is not None
    again = recorder.reread()
    assert (again.workers, again.listen, again.token_ttl) == (2, "127.0.0.1:6001", 900)
    assert changed_settings(recorder.calls[0][0], again) == ["token_ttl"]


def test_changed_settings_names_nested_limits(config: Path) -> None:
    old = load_settings(config)
    new = load_settings(
        overrides={**old.model_dump(), "limits": {"header_timeout": 3, "max_body_bytes": 4096}}
    )
    assert set(changed_settings(old, new)) == {"limits.max_body_bytes", "limits.header_timeout"}
    assert changed_settings(old, load_settings(config)) == []


def test_reread_refuses_what_only_a_restart_applies(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = load_settings(config)
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    for changes, named in [
        ({"listen": "127.0.0.1:7000"}, "listen"),
        ({"workers": 5}, "workers"),
        ({"shutdown_timeout": 3}, "shutdown_timeout"),
        ({"limits": {"header_timeout": 2}}, "limits.header_timeout"),
        ({"tls": {"cert": str(cert), "key": str(key)}}, "tls"),
    ]:
        candidate = load_settings(overrides={**running.model_dump(), **changes})
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="app.api.config_reread"):
            assert reread_config(lambda c=candidate: c, running) is None  # type: ignore[misc]
        assert caplog.messages == [f"SIGHUP ignored: {named} changed: only a restart applies it"]
    fine = load_settings(overrides={**running.model_dump(), "token_ttl": 77})
    assert reread_config(lambda: fine, running) is fine


def test_reread_survives_a_config_that_breaks_the_reader(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def deep() -> Settings:
        raise RecursionError

    with caplog.at_level(logging.ERROR, logger="app.api.config_reread"):
        assert reread_config(deep, load_settings(config)) is None
    assert caplog.messages == ["SIGHUP ignored: the config cannot be read (RecursionError)"]


def test_a_sighup_to_a_state_path_a_start_refuses_is_refused(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It was applied: the workers restarted on a store they could not use, every refresh token
    was lost (401) and failed logins were counted in memory, with no `/readyz` warning; a
    restart then refused the same file."""
    running = load_settings(config)
    missing = tmp_path / "no-such-dir" / "registry-auth.db"
    candidate = load_settings(overrides={**running.model_dump(), "state": {"path": str(missing)}})
    held = [running]
    try:
        with caplog.at_level(logging.ERROR, logger="app.api.config_reread"):
            assert next_settings(held, lambda: candidate) is False
        assert config_refused()
    finally:
        set_config_refused(False)
    assert held == [running]
    assert caplog.messages == [
        f"SIGHUP ignored: config: state.path: its directory {missing.parent} does not exist: "
        "failed logins could not be counted nor refresh tokens kept; point it at a file in a "
        "directory this user may write (e.g. /var/lib/registry-auth/registry-auth.db), or set "
        "state.backend"
    ]
