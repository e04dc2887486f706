"""Hardening against the real service process: brute force behind a trusted proxy, direct TLS
with certificate reload, the request read timeout, graceful SIGTERM, metrics across processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from tests.integration.support.authserver import AuthServer, app_command, start_auth_server
from tests.integration.support.tlscerts import TlsFiles, make_tls_files

USERS = {"ci": "ci-Secret-1"}
ATTACKER, USER = "203.0.113.66", "198.51.100.7"
BRUTE_FORCE = {
    "account_ip_free": 2,
    "account_ip_block": 5,
    "ip_free": 20,
    "ip_block": 50,
    "initial_delay": 1.0,
    "max_delay": 1.0,
    "window": 600,
}
STARTED: list[AuthServer] = []


@pytest.fixture(autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    while STARTED:
        STARTED.pop().stop()


def _server(tmp_path: Path, **extra: Any) -> AuthServer:
    settings = {
        "trusted_proxies": ["127.0.0.1/32"],
        "brute_force": BRUTE_FORCE,
        "audit_log": str(tmp_path / "audit.jsonl"),
        **extra,
    }
    STARTED.append(start_auth_server(tmp_path / "auth", users=USERS, extra_settings=settings))
    return STARTED[-1]


def _login(server: AuthServer, password: str, ip: str) -> httpx.Response:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        return client.get(
            server.realm,
            params={"service": server.service, "account": "ci"},
            auth=("ci", password),
            headers={"X-Forwarded-For": ip},
        )


def test_the_real_user_keeps_logging_in_while_an_attacker_hammers_the_account(
    tmp_path: Path,
) -> None:
    server = _server(tmp_path)
    attacker: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set() and len(attacker) < 200:
            attacker.append(_login(server, f"guess{len(attacker)}", ATTACKER).status_code)

    thread = threading.Thread(target=hammer)
    thread.start()
    user_times: list[float] = []
    try:
        for _ in range(25):
            started = time.monotonic()
            response = _login(server, USERS["ci"], USER)
            user_times.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.1)
    finally:
        # On a loaded machine the attacker may not have reached the block yet: let it go on
        # (bounded) until it has, so the assertions below judge the throttle, not the timing.
        deadline = time.monotonic() + 60
        while 429 not in attacker and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(30)
    assert attacker[:2] == [401, 401]
    assert 429 in attacker
    assert set(attacker[attacker.index(429) :]) == {429}  # once blocked, it stays blocked
    # Not one of the user's logins waited: the only delayed attempts are the attacker's 3rd to
    # 5th (free 2, block 5), counted by the server itself (wall time is too noisy here).
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {line["outcome"] for line in audit if line["client_ip"] == USER} == {"granted"}
    assert {line["outcome"] for line in audit if line["client_ip"] == ATTACKER} == {
        "unauthorized",
        "throttled",
    }
    blocked = _login(server, USERS["ci"], ATTACKER)
    assert blocked.status_code == 429
    assert 590 <= int(blocked.headers["Retry-After"]) <= 600
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'registry_auth_bruteforce_throttles_total{action="blocked"}' in metrics
    assert 'registry_auth_bruteforce_throttles_total{action="delayed"} 3.0' in metrics
    assert 'registry_auth_password_checks_total{result="accepted"} 25.0' in metrics
    assert max(user_times) < 5  # and none of them was refused or hung


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "granian-2-workers"])
def test_a_users_file_rewritten_in_place_never_refuses_its_users(
    tmp_path: Path, workers: int
) -> None:
    """`(sleep 0.3; cat users.new) > users.htpasswd`: the file is empty, and valid, for 0.3 s
    (the settle wait is 1 s). A poll that landed then loaded it: every login 401 (and counted
    against the brute-force counters), every refresh token dead at its next use."""
    server = _server(tmp_path, reload_interval=0.1, workers=workers)
    users = server.workdir / "users.htpasswd"
    full = users.read_bytes()
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            with users.open("wb") as out:  # truncated now, written 0.3 s later
                out.flush()
                time.sleep(0.3)
                out.write(full)
            time.sleep(1.5)

    writer = threading.Thread(target=rewrite)
    writer.start()
    codes = []
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            codes.append(_login(server, USERS["ci"], USER).status_code)
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    assert set(codes) == {200}, codes
    assert "now lists no account" not in server.log()


def test_a_first_burst_of_parallel_guesses_is_checked_no_more_than_the_block_allows(
    tmp_path: Path,
) -> None:
    """60 wrong passwords sent at once from an address with nothing on record: every one that
    arrived before the first failure was counted got its bcrypt check (9 here, where 5 are
    allowed)."""
    server = _server(tmp_path)
    start = threading.Barrier(60)

    def guess(n: int) -> int:
        start.wait()
        return _login(server, f"guess{n}", ATTACKER).status_code

    with ThreadPoolExecutor(60) as pool:
        codes = list(pool.map(guess, range(60)))
    assert sorted(set(codes)) == [401, 429]
    assert codes.count(401) == BRUTE_FORCE["account_ip_block"]
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'registry_auth_password_checks_total{result="rejected"} 5.0' in metrics
    assert _login(server, USERS["ci"], USER).status_code == 200  # the user, elsewhere: in


def _served_certificate(port: int) -> x509.Certificate:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "granian-2-workers"])
def test_direct_tls_serves_https_and_reloads_a_changed_certificate(
    tmp_path: Path, workers: int
) -> None:
    first, second = make_tls_files(tmp_path / "a"), make_tls_files(tmp_path / "b")
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(first.cert, served / "cert.pem")
    shutil.copy(first.key, served / "key.pem")
    server = launch_tls(tmp_path, served, workers)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(first.ca))) as client:
        url = f"https://localhost:{server.port}/token"
        response = client.get(url, params={"service": server.service}, auth=("ci", USERS["ci"]))
        assert response.status_code == 200
    before = _served_certificate(server.port)
    assert before == x509.load_pem_x509_certificate(first.cert.read_bytes())
    (served / "key.pem").write_text("not a key")  # a broken pair: the old one stays served
    time.sleep(0.6)
    assert _served_certificate(server.port) == before
    # Said where an operator looks: it was in the log only, so a broken renewal went unseen
    # until the certificate-expiry alert, 14 days before the end.
    assert _tls_reload_flagged(server.port, first.ca), server.log()
    shutil.copy(second.cert, served / "cert.pem")
    shutil.copy(second.key, served / "key.pem")
    expected = x509.load_pem_x509_certificate(second.cert.read_bytes())
    deadline = time.monotonic() + 15
    # Every process serves it (granian restarts its workers one by one; meanwhile a connection
    # may still get the old certificate, which is still valid).
    rolled = f"Stopped old worker-{workers}" if workers > 1 else ""
    while rolled not in server.log() or any(
        _served_certificate(server.port) != expected for _ in range(10)
    ):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(second.ca))) as client:
        assert client.get(f"https://localhost:{server.port}/healthz").status_code == 200
    assert not _tls_reload_flagged(server.port, second.ca, wait=0), server.log()
    assert "TLS reload failed, keeping the previous certificate" in server.log()
    if workers > 1:  # granian loads the pair at a worker's start: the workers were restarted
        assert "restarting the workers one by one for the new TLS certificate" in server.log()


def _tls_reload_flagged(port: int, ca: Path, *, wait: float = 10) -> bool:
    """Whether /readyz and /metrics say the last TLS reload failed, within `wait` seconds (each
    worker finds it at its own next poll)."""
    warning = "the last reload of the TLS certificate failed: the previous one still serves"
    gauge = 'registry_auth_reload_failing{files="TLS certificate"} 1.0'
    deadline = time.monotonic() + wait
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as client:
        while True:
            ready = client.get(f"https://localhost:{port}/readyz").json()
            scraped = client.get(f"https://localhost:{port}/metrics").text
            flagged = any(warning in w for w in ready.get("warnings", [])) and gauge in scraped
            if flagged or time.monotonic() >= deadline:
                return flagged
            time.sleep(0.2)


def test_a_renewed_certificate_waits_while_a_new_worker_could_not_start(tmp_path: Path) -> None:
    """granian loads the pair only at a worker's start, but a worker started onto a broken user
    file would exit (taking the service down): the roll waits until the files load again."""
    first, second = make_tls_files(tmp_path / "a"), make_tls_files(tmp_path / "b", days=20)
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(first.cert, served / "cert.pem")
    shutil.copy(first.key, served / "key.pem")
    server = launch_tls(tmp_path, served, workers=2)
    users = server.workdir / "users.htpasswd"
    good = users.read_text(encoding="utf-8")
    users.write_text("ci:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", encoding="utf-8")  # refused
    shutil.copy(second.cert, served / "cert.pem")
    shutil.copy(second.key, served / "key.pem")
    deadline = time.monotonic() + 15
    while "the new TLS certificate waits for the workers' files" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    time.sleep(1)
    assert server.process.running, server.log()
    assert "Respawning" not in server.log()
    assert _served_certificate(server.port) == x509.load_pem_x509_certificate(
        first.cert.read_bytes()
    )
    # The expiry told is the served certificate's (a day), not the waiting one's (20 days):
    # each worker reported the new one while the old one was still served.
    assert all(_tls_expiry_days(server, first.ca) < 2 for _ in range(6)), server.log()

    users.write_text(good, encoding="utf-8")  # fixed: the roll goes ahead
    expected = x509.load_pem_x509_certificate(second.cert.read_bytes())
    deadline = time.monotonic() + 20
    while "Stopped old worker-2" not in server.log() or any(
        _served_certificate(server.port) != expected for _ in range(10)
    ):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(second.ca))) as client:
        url = f"https://localhost:{server.port}/token"
        response = client.get(url, params={"service": server.service}, auth=("ci", USERS["ci"]))
        assert response.status_code == 200


def _tls_expiry_days(server: AuthServer, ca: Path) -> float:
    """registry_auth_tls_certificate_expiry_seconds of whichever worker answers, in days."""
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as client:
        text = client.get(f"https://localhost:{server.port}/metrics").text
    (line,) = [
        line for line in text.splitlines()
        if line.startswith("registry_auth_tls_certificate_expiry_seconds")
    ]  # fmt: skip
    return float(line.split()[-1]) / 86400


def _link(target: str, link: Path) -> None:
    """Point `link` at `target` in one step, as certbot and kubelet do (a new link renamed over)."""
    fresh = link.with_name(link.name + ".new")
    fresh.symlink_to(target)
    fresh.rename(link)


def _certbot_layout(served: Path, pair: TlsFiles, number: int) -> None:
    """live/ holds links into archive/; a renewal adds numbered files and repoints the links."""
    archive = served / "archive"
    archive.mkdir(exist_ok=True)
    shutil.copy(pair.cert, archive / f"cert{number}.pem")
    shutil.copy(pair.key, archive / f"key{number}.pem")
    _link(f"archive/cert{number}.pem", served / "cert.pem")
    _link(f"archive/key{number}.pem", served / "key.pem")


def _secret_layout(served: Path, pair: TlsFiles, number: int) -> None:
    """A mounted Kubernetes Secret: files in a timestamped directory, reached through `..data`;
    kubelet swaps `..data` to a new directory and deletes the old one at once."""
    version = served / f"..2026_11_30_{number}"
    version.mkdir()
    shutil.copy(pair.cert, version / "cert.pem")
    shutil.copy(pair.key, version / "key.pem")
    _link(version.name, served / "..data")
    for name in ("cert.pem", "key.pem"):
        if not (served / name).is_symlink():
            (served / name).symlink_to(f"..data/{name}")
    shutil.rmtree(served / f"..2026_11_30_{number - 1}", ignore_errors=True)


@pytest.mark.parametrize("layout", [_certbot_layout, _secret_layout], ids=["certbot", "secret"])
def test_granian_serves_a_pair_renewed_by_repointing_symlinks(
    tmp_path: Path, layout: Callable[[Path, TlsFiles, int], None]
) -> None:
    """granian resolved the configured paths once, at the start: a renewal that repoints a link
    went unseen (the old certificate served until it expired), and once the old files were
    deleted (kubelet) every new worker panicked and the service exited. Its workers now load
    copies of the pair in force."""
    first, second = make_tls_files(tmp_path / "a"), make_tls_files(tmp_path / "b")
    served = tmp_path / "served"
    served.mkdir()
    layout(served, first, 1)
    server = launch_tls(tmp_path, served, workers=2)
    layout(served, second, 2)
    expected = x509.load_pem_x509_certificate(second.cert.read_bytes())
    deadline = time.monotonic() + 20
    while "Stopped old worker-2" not in server.log() or any(
        _served_certificate(server.port) != expected for _ in range(10)
    ):
        assert server.process.running, server.log()
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    os.kill(server.process.pid, signal.SIGHUP)  # workers started again, the old files gone
    while server.log().count("Stopped old worker-2") < 2:
        assert server.process.running, server.log()
        assert time.monotonic() < deadline + 20, server.log()
        time.sleep(0.2)
    assert all(_served_certificate(server.port) == expected for _ in range(10))
    assert "panicked" not in server.log()


def test_a_sighup_that_shortens_reload_interval_reaches_the_certificate_watch(
    tmp_path: Path,
) -> None:
    """The certificate watch runs in granian's main process: it polls at the interval the
    workers run on now, not the one the service started with."""
    first, second = make_tls_files(tmp_path / "a"), make_tls_files(tmp_path / "b")
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(first.cert, served / "cert.pem")
    shutil.copy(first.key, served / "key.pem")
    server = launch_tls(tmp_path, served, workers=2, reload_interval=300)
    config = yaml.safe_load(server.config_path.read_text(encoding="utf-8"))
    config["reload_interval"] = 0.2
    server.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    os.kill(server.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while server.log().count("Stopped old worker-") < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    assert "the config changed (reload_interval)" in server.log()
    shutil.copy(second.cert, served / "cert.pem")
    shutil.copy(second.key, served / "key.pem")
    expected = x509.load_pem_x509_certificate(second.cert.read_bytes())
    deadline = time.monotonic() + 20
    while "restarting the workers one by one for the new TLS certificate" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    while server.log().count("Stopped old worker-") < 4 or any(
        _served_certificate(server.port) != expected for _ in range(10)
    ):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)


def launch_tls(
    tmp_path: Path, served: Path, workers: int = 1, reload_interval: float = 0.2
) -> AuthServer:
    from tests.integration.support.authserver import launch_auth_server  # noqa: PLC0415

    server = launch_auth_server(
        tmp_path / "auth",
        users=USERS,
        extra_settings={
            "tls": {"cert": str(served / "cert.pem"), "key": str(served / "key.pem")},
            "reload_interval": reload_interval,
            "workers": workers,
        },
    )
    STARTED.append(server)
    deadline = time.monotonic() + 20
    while True:
        try:
            _served_certificate(server.port)
        except OSError:
            assert server.process.running, server.log()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        else:
            server.wait_workers()
            return server


def test_a_client_that_sends_its_request_too_slowly_is_cut_off(tmp_path: Path) -> None:
    server = _server(tmp_path, limits={"header_timeout": 1.0})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = b""
        while chunk := slow.recv(4096):
            answer += chunk
            slow.sendall(b"X-Drip: 1\r\n") if time.monotonic() - started < 0.5 else None
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"request_timeout"' in answer
    assert time.monotonic() - started < 5
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def _answer_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


@pytest.mark.parametrize("workers", [1, 2])
def test_a_post_whose_body_stops_coming_gets_408_and_the_connection_closes(
    tmp_path: Path, workers: int
) -> None:
    """uvicorn cuts it in its protocol, granian (which bounds only the headers) in the app."""
    server = _server(tmp_path, limits={"header_timeout": 1.0}, workers=workers)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 200\r\n\r\ngrant_type="
        )
        started = time.monotonic()
        answer = _answer_until_closed(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"request_timeout"' in answer
    assert time.monotonic() - started < 5
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def _drip(sock: socket.socket, data: bytes, seconds: float) -> None:
    """Send `data` in pieces spread over `seconds`."""
    pieces = 7
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        sock.sendall(data[start : start + size])
        time.sleep(seconds / pieces)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_headers_and_then_the_body_each_have_the_header_timeout(
    tmp_path: Path, workers: int
) -> None:
    """The README's promise: headers within `limits.header_timeout`, then the body within it
    again. uvicorn counted both together, and cut this request off with a 408."""
    server = _server(tmp_path, limits={"header_timeout": 1.5}, workers=workers)
    form = f"grant_type=password&username=ci&password={USERS['ci']}&client_id=slow".encode()
    head = (
        f"POST /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
        f"application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        _drip(slow, head, 1.0)
        _drip(slow, form, 1.0)
        answer = _answer_until_closed(slow)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_uvicorn_counts_a_request_from_its_first_byte_not_from_the_last_answer(
    tmp_path: Path,
) -> None:
    """On a keep-alive connection the time it sat idle after an answer (bounded by uvicorn's
    keep-alive timeout) no longer counts against the next request's headers."""
    server = _server(tmp_path, limits={"header_timeout": 1.5})
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    def answer(client: socket.socket) -> bytes:
        got = b""
        while not got.endswith(b'{"status":"ok"}'):
            chunk = client.recv(4096)
            assert chunk, f"closed after {got!r}"
            got += chunk
        return got

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(request)
        assert answer(client).startswith(b"HTTP/1.1 200 ")
        time.sleep(1.0)
        _drip(client, request, 1.0)
        assert answer(client).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_body_nobody_reads_cannot_hold_the_connection(tmp_path: Path, workers: int) -> None:
    """A GET announcing a body is answered without reading it; a body then dripped byte by
    byte must not keep the connection forever."""
    server = _server(tmp_path, limits={"header_timeout": 1.0}, workers=workers)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        slow.settimeout(0.3)
        closed = False
        while not closed and time.monotonic() - started < 8:
            try:
                slow.sendall(b"x")
                closed = slow.recv(4096) == b"" and time.monotonic() - started > 0
            except TimeoutError:
                continue
            except OSError:
                closed = True
    assert closed, "the connection was still open after 8 s"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_grant_whose_body_never_arrived_whole_is_not_judged(tmp_path: Path, workers: int) -> None:
    """The client closes the connection 50 bytes short: before, the truncated form was judged
    and an offline grant issued a refresh token that nobody received."""
    server = _server(tmp_path, workers=workers)
    form = (
        f"grant_type=password&username=ci&password={USERS['ci']}&service={server.service}"
        "&client_id=truncated&access_type=offline"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as gone:
        gone.sendall(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: " + str(len(form) + 50).encode() + b"\r\n\r\n" + form
        )
        time.sleep(0.5)  # the server has the form's bytes and waits for the rest
    whole = form.replace(b"truncated", b"whole")
    answer = httpx.post(
        server.realm, content=whole, timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert answer.status_code == 200
    assert "refresh_token" in answer.json()
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"client_id":"whole"' in audit.replace(" ", "")
    assert "truncated" not in audit
    assert "client 'truncated'" not in server.log()


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "granian-2-workers"])
def test_a_request_still_running_at_shutdown_timeout_is_cut_and_the_server_exits_0(
    tmp_path: Path, workers: int
) -> None:
    """`shutdown_timeout` bounds the wait for requests in flight in both servers (granian had
    no bound); uvicorn answers the cut request 503 JSON (it was a 500 and a traceback)."""
    slow = {**BRUTE_FORCE, "initial_delay": 30.0, "max_delay": 30.0}
    server = _server(tmp_path, brute_force=slow, shutdown_timeout=2, workers=workers)
    for _ in range(2):
        assert _login(server, "wrong", ATTACKER).status_code == 401
    result: dict[str, Any] = {}

    def slow_login() -> None:  # would wait 30 s for the brute-force delay
        try:
            result["response"] = _login(server, USERS["ci"], ATTACKER)
        except httpx.TransportError as exc:
            result["error"] = exc

    thread = threading.Thread(target=slow_login)
    thread.start()
    _wait_until_delayed(server)  # the request is in flight, in its brute-force delay
    stopped_at = time.monotonic()
    server.process.popen.terminate()
    assert server.process.popen.wait(15) == 0, server.log()
    thread.join(15)
    assert time.monotonic() - stopped_at < 10  # not the 30 s the login would have taken
    if workers == 1:
        response = result["response"]
        assert response.status_code == 503
        assert response.json()["details"] == "the server is shutting down; try again"
        assert "Traceback" not in server.log()
        assert "GET /token cut: still running at shutdown" in server.log()
        # Audited as what the client was told, not as an internal error.
        last = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
        assert (last["outcome"], last["reason"]) == (
            "unavailable", "temporarily_unavailable: the server is shutting down",
        )  # fmt: skip
    else:  # granian kills the worker: the connection ends without an answer
        assert "error" in result, result
        assert "Killing worker" in server.log()


def _wait_until_delayed(server: AuthServer, seconds: float = 20) -> None:
    """Until the metrics count a login slowed by the brute-force delay (it is then in flight)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        if 'registry_auth_bruteforce_throttles_total{action="delayed"} 1.0' in text:
            return
        time.sleep(0.1)
    raise AssertionError(f"no delayed login within {seconds} s\n{server.log()}")


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    server = _server(tmp_path, brute_force={**BRUTE_FORCE, "initial_delay": 2.0, "max_delay": 2.0})
    for _ in range(2):
        assert _login(server, "wrong", ATTACKER).status_code == 401
    result: dict[str, Any] = {}

    def slow_login() -> None:  # delayed 2 s by the brute-force protection
        result["response"] = _login(server, USERS["ci"], ATTACKER)

    thread = threading.Thread(target=slow_login)
    thread.start()
    # The answer comes 2 s after the request arrives, so SIGTERM at 1.5 s finds it in flight;
    # the wait before that leaves a loaded machine time to send and read the request.
    time.sleep(1.5)
    server.process.popen.terminate()
    thread.join(15)
    assert result["response"].status_code == 200
    assert server.process.popen.wait(15) == 0, server.log()
    assert "Finished server process" in server.log()


def test_the_healthcheck_command_follows_the_configs_address_and_tls(tmp_path: Path) -> None:
    """The image's HEALTHCHECK asked http://127.0.0.1:5001 whatever `listen` and `tls` said."""
    plain = _server(tmp_path / "plain")
    tls = make_tls_files(tmp_path / "tls")
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(tls.cert, served / "cert.pem")
    shutil.copy(tls.key, served / "key.pem")
    https = launch_tls(tmp_path, served)
    for server, scheme in ((plain, "http"), (https, "https")):
        code, out = _healthcheck(server)
        assert (code, out) == (
            0,
            f"registry-auth: healthy: {scheme}://127.0.0.1:{server.port}/healthz\n",
        )
    https.process.stop()
    code, out = _healthcheck(https)
    assert code == 1
    assert out.startswith("registry-auth: unhealthy ("), out
    assert "Connection refused" in out, out


def _healthcheck(server: AuthServer) -> tuple[int, str]:
    # A container's proxy settings are for the way out: the check must not go through them.
    proxy = "http://127.0.0.1:9"
    env = {**os.environ, "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy}
    done = subprocess.run(
        app_command("healthcheck", "--config", str(server.config_path), "--timeout", "5"),
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    return done.returncode, done.stdout
