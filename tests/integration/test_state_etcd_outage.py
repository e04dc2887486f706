"""The etcd state store hanging (SIGSTOP: it accepts connections and never answers), with the
real service: a login waited `etcd_timeout` (5 s by default) on every request, for as long as
it lasted, and each logged a warning. Now the first one waits; the rest go on at once, and
one line each says that the store went and that it came back."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli import run
from app.etcd.gateway import Connection, GatewayClient
from app.etcd.state import RETRY_AFTER
from tests.integration.support.authserver import AuthServer, start_auth_server
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.test_refresh_tokens import refresh_grant, refresh_token_for

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-Secret-1"}
TIMEOUT = 2.0  # etcd_timeout: what each login waited while etcd hung


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path / "etcd")
    yield server
    if server.process is not None and server.process.running:
        os.kill(server.process.popen.pid, signal.SIGCONT)
    server.stop()


def test_a_hanging_etcd_costs_one_timeout_not_one_per_login(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    state = {"backend": "etcd", "etcd_endpoints": [etcd.url], "etcd_timeout": TIMEOUT}
    extra = {"state": state, "brute_force": {"etcd_read_cache": 0}}
    auth = start_auth_server(tmp_path / "auth", users=USERS, extra_settings=extra)
    try:
        token = refresh_token_for(auth)
        assert auth.process.popen.pid
        assert etcd.process is not None
        os.kill(etcd.process.popen.pid, signal.SIGSTOP)
        started = time.monotonic()
        for _ in range(10):  # each login reads its brute-force counters from etcd
            answer = auth.token(["repository:team/app:pull"], auth=("alice", USERS["alice"]))
            assert answer.status_code == 200, answer.text
        took = time.monotonic() - started
        # One login paid the timeout (twice at most: a retry every RETRY_AFTER), not ten.
        assert took < 2 * TIMEOUT + 2, took
        refused = refresh_grant(auth, token)
        assert refused.status_code == 503  # a refresh grant needs the store: at once, too
        # /readyz said nothing of it: only the log and a metric did.
        assert "the state store (etcd) failed" in _warnings(auth), auth.log()
        os.kill(etcd.process.popen.pid, signal.SIGCONT)
        deadline = time.monotonic() + RETRY_AFTER + 3 * TIMEOUT
        while refresh_grant(auth, token).status_code != 200:
            assert time.monotonic() < deadline, auth.log()
            time.sleep(0.5)
        assert "the state store (etcd)" not in _warnings(auth), auth.log()
    finally:
        auth.stop()
    log = auth.log()
    # Once, though two stores (refresh tokens, login counters) saw it: each said it before.
    assert log.count(f"state store (etcd v3 at {etcd.url}) unavailable") == 1, log
    assert log.count("available again after") == 1, log
    assert log.count("brute-force counters unavailable, counting failures in") == 1, log  # a min


def _warnings(auth: AuthServer) -> str:
    answer = httpx.get(f"{auth.url}/readyz", timeout=10, trust_env=False)
    assert answer.status_code == 200, answer.text  # tokens are still signed
    return " | ".join(answer.json().get("warnings", []))


@pytest.mark.parametrize(
    "argv",
    [["tokens", "list"], ["logins", "status", "--ip", "203.0.113.9"]],
    ids=["tokens", "logins"],
)
def test_a_command_against_an_unreachable_store_is_one_error_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    argv: list[str],
) -> None:
    """Not the server's warning first (failed logins counted in memory, 503 to refresh grants),
    which says nothing about the command."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(
        "issuer: i\nservice: s\nrealm: http://a/token\n"
        f"state: {{backend: etcd, etcd_endpoints: ['http://127.0.0.1:{port}']}}\n"
    )
    assert run([*argv, "--config", str(config)], serve=lambda *_: None) == 2
    assert capsys.readouterr().err == (
        f"registry-auth: error: etcd v3 at http://127.0.0.1:{port}: connection refused\n"
    )
    assert not [r for r in caplog.records if r.name == "app.etcd.state"]


def test_a_hung_first_endpoint_costs_one_timeout_then_the_next_is_asked_first(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call asked the endpoints in their configured order: a hung first member added
    its timeout to every call (a refresh grant took 5 s, a `docker login` 25 s), and nothing
    said so, since the next member answered."""
    with socket.socket() as hung:  # takes connections (the backlog), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        first = f"http://127.0.0.1:{hung.getsockname()[1]}"
        client = GatewayClient(Connection([first, etcd.url], 1.0))
        try:
            timings = []
            for n in range(4):
                started = time.monotonic()
                client.put(f"/sticky/{n}".encode(), b"v")
                timings.append(time.monotonic() - started)
            # Another client of the same etcd (the counters' beside the refresh tokens') has
            # learnt it too: it paid the timeout and said it again.
            other = GatewayClient(Connection([first, etcd.url], 1.0))
            started = time.monotonic()
            other.put(b"/sticky/other", b"v")
            timings.append(time.monotonic() - started)
            other.close()
        finally:
            client.close()
    assert timings[0] >= 1.0  # the first call finds out
    assert max(timings[1:]) < 0.5, timings  # then the member that answers is asked first
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"etcd: {first}: timed out waiting for an answer")
    assert warnings[0].endswith(f"asking {etcd.url} first from now on")
