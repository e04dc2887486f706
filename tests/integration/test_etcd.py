"""etcd: the service publishes realm/issuer/service to the real etcd 3.4 and keeps them there.

Both APIs: v2 (LAIN's registry reads it; python-etcd) and v3 (the JSON gateway). Values are
read back with the real `etcdctl`, and for v2 also with python-etcd, as LAIN's tools would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import etcd
import httpx
import pytest

from tests.integration.support.authserver import AuthServer, app_command, start_auth_server
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.support.procs import free_port

T = TypeVar("T")
APIS = ["v2", "v3"]
KEY = "/lain/config/auth/registry"
ISSUER, SERVICE = "auth server", "lain.test"


def expected_value(auth: AuthServer) -> str:
    """Compact JSON, exactly the three keys (the issue's contract with the registry)."""
    return json.dumps(
        {"realm": auth.realm, "issuer": ISSUER, "service": SERVICE}, separators=(",", ":")
    )


def eventually(probe: Callable[[], T | None], timeout: float, what: str, log: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f}s: {what}\n{log}")


def readyz(auth: AuthServer) -> dict[str, Any]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        response = client.get(f"{auth.url}/readyz")
    assert response.status_code == 200, response.text
    return dict(response.json())


def etcd_config(server: EtcdServer, api: str, **options: Any) -> dict[str, Any]:
    return {"endpoints": [server.url], "key": KEY, "api": api, **options}


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path / "etcd")
    yield server
    server.stop()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., AuthServer]]:
    """Start our service with an `etcd` section; stopped after the test."""
    started: list[AuthServer] = []

    def start(etcd_settings: dict[str, Any] | None) -> AuthServer:
        extra = {"etcd": etcd_settings} if etcd_settings is not None else {}
        workdir = tmp_path / f"service{len(started)}"
        auth = start_auth_server(workdir, issuer=ISSUER, service=SERVICE, extra_settings=extra)
        started.append(auth)
        return auth

    yield start
    for auth in started:
        auth.stop()


def run_cli(*args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        app_command(*args), capture_output=True, text=True, timeout=60, check=False
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("api", APIS)
def test_key_appears_at_start_with_exactly_the_expected_json(
    api: str, etcd_server: EtcdServer, start_service: Callable[..., AuthServer]
) -> None:
    auth = start_service(etcd_config(etcd_server, api))
    value = eventually(lambda: etcd_server.get(api, KEY), 10, "key published", auth.log())
    assert value == expected_value(auth)
    assert list(json.loads(value)) == ["realm", "issuer", "service"]
    if api == "v2":  # as LAIN reads it: python-etcd on the v2 keyspace
        client = etcd.Client(host="127.0.0.1", port=etcd_server.client_port)
        assert client.read(KEY).value == expected_value(auth)
    status = eventually(lambda: readyz(auth)["etcd"]["published"] and readyz(auth), 10, "ready")
    assert status["etcd"]["last_error"] is None
    assert status["etcd"]["last_success"].endswith("Z")
    scraped = httpx.get(f"{auth.url}/metrics", timeout=10).text
    assert "registry_auth_etcd_published 1.0" in scraped
    assert "registry_auth_etcd_publish_failures 0.0" in scraped


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("tamper", ["delete", "garbage"])
def test_deleted_or_overwritten_key_is_back_within_the_interval(
    api: str, tamper: str, etcd_server: EtcdServer, start_service: Callable[..., AuthServer]
) -> None:
    # watch off: this is the periodic check alone.
    auth = start_service(etcd_config(etcd_server, api, interval=1.0, watch=False))
    eventually(lambda: etcd_server.get(api, KEY), 10, "key published", auth.log())
    if tamper == "delete":
        etcd_server.delete(api, KEY)
    else:
        etcd_server.put(api, KEY, "not json at all")
    time_tampered = time.monotonic()
    value = eventually(
        lambda: etcd_server.get(api, KEY) == expected_value(auth), 5, "key restored", auth.log()
    )
    assert value
    assert time.monotonic() - time_tampered < 3.0  # interval 1 s, plus a request or two
    # The service logs right after etcd has the value back: wait for the line, not just the key.
    if tamper == "delete":  # published at start, and again after the delete
        eventually(lambda: auth.log().count("etcd: published") >= 2, 5, "logged", auth.log())
        assert auth.log().count("etcd: published") == 2, auth.log()
    else:
        line = "held 'not json at all'; replaced it with"
        eventually(lambda: line in auth.log(), 5, "logged", auth.log())


@pytest.mark.parametrize("api", APIS)
def test_the_watch_restores_the_key_long_before_the_interval(
    api: str, etcd_server: EtcdServer, start_service: Callable[..., AuthServer]
) -> None:
    auth = start_service(etcd_config(etcd_server, api, interval=120.0, watch=True))
    eventually(lambda: readyz(auth)["etcd"]["published"], 10, "published", auth.log())
    time.sleep(0.5)  # let the watch start its long-poll
    etcd_server.put(api, KEY, '{"realm":"http://evil.example/token","issuer":"x","service":"y"}')
    eventually(
        lambda: etcd_server.get(api, KEY) == expected_value(auth),
        10,
        "restored by watch",
        auth.log(),
    )
    assert "changed; checking it now" in auth.log()


@pytest.mark.parametrize("api", APIS)
def test_service_starts_and_issues_tokens_while_etcd_is_down(
    api: str, tmp_path: Path, start_service: Callable[..., AuthServer]
) -> None:
    server = start_etcd(tmp_path / "etcd", start=False)  # ports chosen, nothing listening
    auth = start_service(etcd_config(server, api, retry_initial=0.2, retry_max=1.0))
    try:
        response = auth.token(["repository:team/app:pull"])
        assert response.status_code == 200, response.text
        assert response.json()["token"]
        status = eventually(
            lambda: (s := readyz(auth)["etcd"])["last_error"] and s, 10, "error shown", auth.log()
        )
        assert status["published"] is False
        assert "connection refused" in status["last_error"]
        # Anyone may ask /readyz: what went wrong, not where etcd is (the log has that).
        assert str(server.client_port) not in json.dumps(status), status
        assert status["last_success"] is None
        assert "publishing failed (attempt" in auth.log()
        server.start()
        value = eventually(lambda: server.get(api, KEY), 10, "key after etcd start", auth.log())
        assert value == expected_value(auth)
        flipped = eventually(lambda: (s := readyz(auth)["etcd"])["published"] and s, 5, "ready")
        assert flipped["last_error"] is None
    finally:
        server.stop()


@pytest.mark.parametrize("api", APIS)
def test_killed_etcd_restarted_on_a_fresh_data_dir_gets_the_key_again(
    api: str, etcd_server: EtcdServer, start_service: Callable[..., AuthServer]
) -> None:
    auth = start_service(etcd_config(etcd_server, api, interval=1.0, retry_max=1.0))
    eventually(lambda: etcd_server.get(api, KEY), 10, "key published", auth.log())
    etcd_server.kill()
    eventually(lambda: not readyz(auth)["etcd"]["published"], 10, "outage seen", auth.log())
    assert auth.token().status_code == 200  # tokens go on while etcd is gone
    etcd_server.restart(fresh=True)
    value = eventually(lambda: etcd_server.get(api, KEY), 10, "re-published", auth.log())
    assert value == expected_value(auth)


@pytest.mark.parametrize("api", APIS)
def test_key_is_left_on_shutdown_by_default_and_deleted_when_asked(
    api: str, etcd_server: EtcdServer, start_service: Callable[..., AuthServer]
) -> None:
    auth = start_service(etcd_config(etcd_server, api))
    eventually(lambda: etcd_server.get(api, KEY), 10, "key published", auth.log())
    auth.stop()
    assert etcd_server.get(api, KEY) == expected_value(auth)  # the registry needs it to start

    other = start_service(etcd_config(etcd_server, api, delete_on_shutdown=True))
    eventually(lambda: readyz(other)["etcd"]["published"], 10, "published", other.log())
    other.stop()
    assert etcd_server.get(api, KEY) is None, other.log()


def test_with_workers_only_the_service_stopping_deletes_the_key(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    """With `delete_on_shutdown`, each old worker stopping in a SIGHUP roll deleted the key (a
    LAIN registry starting then would run without token auth); and the workers publishing at
    once at the start warned that another writer had changed the key: each other."""
    settings = {
        "workers": 2,
        "etcd": etcd_config(etcd_server, "v2", delete_on_shutdown=True),
    }
    auth = start_auth_server(tmp_path, issuer=ISSUER, service=SERVICE, extra_settings=settings)
    try:
        node_url = f"{etcd_server.url}/v2/keys{KEY}"

        def created() -> int | None:
            answer = httpx.get(node_url, timeout=5, trust_env=False)
            return int(answer.json()["node"]["createdIndex"]) if answer.status_code == 200 else None

        first = eventually(created, 10, "key published", auth.log())
        auth.config_path.write_text(
            json.dumps({**auth.settings, "token_ttl": 600}), encoding="utf-8"
        )
        os.kill(auth.process.pid, signal.SIGHUP)
        eventually(lambda: "Stopped old worker-2" in auth.log(), 30, "roll done", auth.log())
        assert created() == first, auth.log()  # never deleted and created again
        assert "another writer" not in auth.log(), auth.log()
        assert auth.process.stop(timeout=20) == 0, auth.log()
        assert etcd_server.get("v2", KEY) is None, auth.log()
        assert auth.log().count("etcd: deleted") == 1, auth.log()
    finally:
        auth.stop()


def test_a_roll_onto_a_new_realm_does_not_flip_the_key_back(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    """During a SIGHUP roll that changed `realm`, the old workers and the new each restored
    their own record at once: the key flipped between the two realms until the roll ended,
    and a registry starting then could read the old one."""
    settings = {"workers": 2, "etcd": etcd_config(etcd_server, "v2", interval=1)}
    auth = start_auth_server(tmp_path, issuer=ISSUER, service=SERVICE, extra_settings=settings)
    try:
        old_realm = auth.settings["realm"]
        new_realm = old_realm.replace("/token", "/v2/token")

        def realm() -> str | None:
            value = etcd_server.get("v2", KEY)
            return json.loads(value)["realm"] if value else None

        eventually(lambda: realm() == old_realm, 10, "key published", auth.log())
        auth.config_path.write_text(
            json.dumps({**auth.settings, "realm": new_realm}), encoding="utf-8"
        )
        os.kill(auth.process.pid, signal.SIGHUP)
        seen: list[str | None] = []
        deadline = time.monotonic() + 30
        while "Stopped old worker-2" not in auth.log() and time.monotonic() < deadline:
            seen.append(realm())
            time.sleep(0.05)
        for _ in range(40):  # and for two seconds after the roll (two publish intervals)
            seen.append(realm())
            time.sleep(0.05)
        assert new_realm in seen, auth.log()
        after = seen[seen.index(new_realm) :]
        assert set(after) == {new_realm}, (after, auth.log())  # never back to the old one
        assert "left to the workers started after a reload" in auth.log()
    finally:
        auth.stop()


def test_without_etcd_the_service_says_once_that_it_does_not_publish(
    start_service: Callable[..., AuthServer],
) -> None:
    auth = start_service(None)
    assert readyz(auth)["etcd"] == {
        "enabled": False,
        "published": False,
        "last_error": None,
        "last_success": None,
        "failures": 0,
    }
    auth.stop()
    assert auth.log().count("etcd: not configured") == 1


# --- the commands, and configs that cannot work ---


def write_config(tmp_path: Path, etcd_settings: dict[str, Any]) -> Path:
    keys = tmp_path / "keys"
    if not keys.exists():
        code, _, err = run_cli("keys", "generate", "--keys-dir", str(keys))
        assert code == 0, err
    config = tmp_path / "cli.yaml"
    config.write_text(
        json.dumps(
            {
                "issuer": ISSUER,
                "service": SERVICE,
                "realm": "http://127.0.0.1:5001/token",
                "keys_dir": str(keys),
                "etcd": etcd_settings,
            }
        ),
        encoding="utf-8",
    )
    return config


CLI_VALUE = json.dumps(
    {"realm": "http://127.0.0.1:5001/token", "issuer": ISSUER, "service": SERVICE},
    separators=(",", ":"),
)


@pytest.mark.parametrize("api", APIS)
def test_publish_and_show_commands(api: str, etcd_server: EtcdServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, etcd_config(etcd_server, api))
    code, out, _ = run_cli("etcd", "show", "--config", str(config))
    assert code == 1
    assert "no value (key absent)" in out
    assert "differs from the config" in out

    code, out, err = run_cli("etcd", "publish", "--config", str(config))
    assert code == 0, err
    assert "created" in out
    assert etcd_server.get(api, KEY) == CLI_VALUE

    code, out, _ = run_cli("etcd", "publish", "--config", str(config))
    assert code == 0
    assert "already up to date" in out

    code, out, _ = run_cli("etcd", "show", "--config", str(config))
    assert code == 0
    assert CLI_VALUE in out
    assert "matches the config" in out


def assert_clear_failure(code: int, out: str, err: str, *words: str) -> None:
    assert code != 0, out
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], err


@pytest.mark.parametrize("api", APIS)
def test_wrong_endpoint_is_a_clear_error(api: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"endpoints": [f"http://127.0.0.1:{free_port()}"], "api": api})
    code, out, err = run_cli("etcd", "publish", "--config", str(config))
    assert_clear_failure(code, out, err, "connection refused", "127.0.0.1")


@pytest.mark.parametrize("api", APIS)
def test_non_etcd_server_at_the_endpoint_is_a_clear_error(
    api: str, tmp_path: Path, start_service: Callable[..., AuthServer]
) -> None:
    not_etcd = start_service(None)  # our own token server: HTTP, but not etcd
    config = write_config(tmp_path, {"endpoints": [not_etcd.url], "api": api})
    code, out, err = run_cli("etcd", "publish", "--config", str(config))
    assert_clear_failure(code, out, err, f"not an etcd {api}")


@pytest.mark.parametrize("api", APIS)
def test_wrong_credentials_are_a_clear_error(
    api: str, etcd_server: EtcdServer, tmp_path: Path, start_service: Callable[..., AuthServer]
) -> None:
    etcd_server.enable_auth(api, "right-Password-1")
    wrong = etcd_config(etcd_server, api, username="root", password="wrong-Password")
    config = write_config(tmp_path, wrong)
    code, out, err = run_cli("etcd", "publish", "--config", str(config))
    assert_clear_failure(code, out, err, "etcd refused")
    assert "wrong-Password" not in err  # secrets never in messages

    right = write_config(tmp_path, {**wrong, "password": "right-Password-1"})
    code, out, err = run_cli("etcd", "publish", "--config", str(right))
    assert code == 0, err

    auth = start_service(wrong)  # the service itself: up, tokens issued, the error visible
    assert auth.token().status_code == 200
    status = eventually(lambda: (s := readyz(auth)["etcd"])["last_error"] and s, 10, "error")
    assert "etcd refused" in status["last_error"]
    assert "wrong-Password" not in auth.log()


@pytest.mark.parametrize("api", APIS)
def test_a_hung_etcd_costs_one_timeout_not_four(
    api: str, etcd_server: EtcdServer, tmp_path: Path
) -> None:
    """A stopped etcd (SIGSTOP: it accepts, then never answers) made urllib3 try the v2
    request 4 times over: `etcd show` with `timeout: 2` took ~8 s, and so did a shutdown."""
    config = write_config(tmp_path, etcd_config(etcd_server, api, timeout=2))
    code, out, err, took = _show_while_stopped(etcd_server, config)
    # Told apart from an etcd that cannot be reached: it took the connection, then said nothing.
    assert_clear_failure(code, out, err, "etcd took the connection but did not reply")
    assert took < 6.5, f"{took:.1f} s"  # one 2 s timeout and a Python start, not four timeouts


def test_a_hung_first_endpoint_costs_one_timeout_before_the_next(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    """v2 with two endpoints: the client asked the first for the member list with urllib3's
    4 tries before its own retries were set (4 x timeout per hung endpoint)."""
    hung = start_etcd(tmp_path / "hung")
    try:
        live = write_config(tmp_path / "live", etcd_config(etcd_server, "v2"))
        assert run_cli("etcd", "publish", "--config", str(live))[0] == 0
        settings = {"endpoints": [hung.url, etcd_server.url], "key": KEY, "timeout": 2}
        config = write_config(tmp_path, settings)
        code, out, err, took = _show_while_stopped(hung, config)
    finally:
        hung.stop()
    assert code == 0, err
    assert '"realm"' in out
    assert took < 6.5, f"{took:.1f} s"  # one 2 s timeout, then the second endpoint


def _show_while_stopped(server: EtcdServer, config: Path) -> tuple[int, str, str, float]:
    """`etcd show` while `server` is SIGSTOPped (it accepts, then never answers), and the
    seconds it took."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, out, err = run_cli("etcd", "show", "--config", str(config))
        return code, out, err, time.monotonic() - started
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
