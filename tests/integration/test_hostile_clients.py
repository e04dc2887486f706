"""What a hostile or broken client sends, against the real server as an operator runs it, with
one worker (uvicorn) and with two (granian): whatever it sends gets a 4xx (JSON when the app
can still answer), never a 500, and the metrics count what was sent."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.support.authserver import AuthServer, start_auth_server

USERS = {"ci": "ci-Secret-1"}
REALM_PATH = "/api/v1/authorize/registry/"
FORM = b"grant_type=password&username=ci&password=ci-Secret-1&service=registry.test"
BAD_CHUNK = b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
ENDED_EARLY = "the request body ended early or is malformed"


@pytest.fixture(scope="module", params=[1, 2], ids=["uvicorn", "granian-2-workers"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthServer]:
    settings = {
        "workers": request.param,
        # Any host: only the path matters to the server, and it differs from /token.
        "realm": f"http://auth.example{REALM_PATH}",
        "brute_force": {"enabled": False},
    }
    workdir = tmp_path_factory.mktemp(f"hostile-{request.param}")
    started = start_auth_server(workdir, users=USERS, extra_settings=settings)
    yield started
    started.stop()


def _granian(server: AuthServer) -> bool:
    return bool(server.settings["workers"] > 1)


def _exchange(server: AuthServer, request: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes, optionally shut the sending side, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def _json_body(answer: bytes) -> dict[str, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer
    parsed: dict[str, str] = json.loads(body)
    return parsed


def _json_details(answer: bytes) -> str:
    return _json_body(answer)["details"]


def _cut_short(path: str) -> bytes:
    """A form POST announcing 50 bytes more than it sends."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
        f"\r\nContent-Length: {len(FORM) + 50}\r\n\r\n"
    ).encode() + FORM


@pytest.mark.parametrize("path", ["/token", REALM_PATH, "/healthz"])
def test_a_malformed_chunk_is_a_400_never_a_500(server: AuthServer, path: str) -> None:
    """uvicorn's parser refuses it (400, in JSON naming the problem since the protocol
    answers so); granian hands the app a disconnect, and the app's silence was answered 500 by
    granian."""
    answer = _exchange(server, f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode() + BAD_CHUNK)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    expected = "the request is not valid HTTP/1.1: illegal chunk header"
    assert _json_details(answer) == (ENDED_EARLY if _granian(server) else expected)


@pytest.mark.parametrize("path", ["/token", REALM_PATH, "/healthz"])
def test_a_body_cut_short_by_a_half_closed_client_is_never_a_500(
    server: AuthServer, path: str
) -> None:
    """The client shuts its sending side 50 bytes short: granian still carries the app's 400
    to it; uvicorn closes the connection at the client's end of data, without an answer."""
    answer = _exchange(server, _cut_short(path), half_close=True)
    if _granian(server):
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert _json_details(answer) == ENDED_EARLY
    else:
        assert answer == b""


def _requests(server: AuthServer) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        (sample.labels["endpoint"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "registry_auth_requests_total"
    }


def test_the_metrics_count_a_body_that_ended_early_as_invalid(server: AuthServer) -> None:
    before = _requests(server)
    _exchange(server, b"POST /token HTTP/1.1\r\nHost: x\r\n" + BAD_CHUNK)
    _exchange(server, b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + BAD_CHUNK)
    _exchange(server, _cut_short("/token"), half_close=True)
    # uvicorn answers a malformed chunk itself, and the app, which had begun, sees the
    # disconnect: counted as invalid there too. granian counted /healthz as an error.
    grown = {("token_post", "invalid"): 2.0, ("healthz", "invalid"): 1.0}
    deadline = time.monotonic() + 5  # each worker writes its counts as a loop turn ends
    while True:
        after = _requests(server)
        changed = {key: after[key] - before.get(key, 0.0) for key in after
                   if after[key] != before.get(key, 0.0) and key[0] != "metrics"}  # fmt: skip
        if changed == grown or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert changed == grown


def _other_spelling(path: str) -> str:
    return path[:-1] if path.endswith("/") else path + "/"


@pytest.mark.parametrize("path", ["/token/", REALM_PATH.rstrip("/")])
def test_the_token_paths_answer_the_other_spelling_without_a_redirect(
    server: AuthServer, path: str
) -> None:
    """Starlette answered 307 to http://<the client's Host>/token: a client following it sent
    its password form to whatever host it had been told, over plain http."""
    form = {"grant_type": "password", "username": "ci", "password": USERS["ci"],
            "service": "registry.test", "client_id": "spelling"}  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        post = client.post(path, data=form, headers={"Host": "evil.example"})
        get = client.get(path, params={"service": "registry.test"}, auth=("ci", USERS["ci"]))
        head = client.head(path, params={"service": "registry.test"})
    for answer in (post, get, head):
        assert answer.status_code == 200, (answer.request.method, answer.text)
        assert "location" not in answer.headers
    assert "access_token" in post.json()
    assert "token" in get.json()


@pytest.mark.parametrize("path", ["/healthz/", "/metrics/", "/.well-known/jwks.json/"])
def test_an_unknown_path_is_a_json_404_not_a_redirect(server: AuthServer, path: str) -> None:
    answer = httpx.post(f"{server.url}{path}", headers={"Host": "evil.example"}, timeout=10)
    assert answer.status_code == 404, answer.headers
    assert "location" not in answer.headers
    assert answer.json()["error"] == "not_found"


# What `curl --http2-prior-knowledge` sends first: the HTTP/2 preface and a SETTINGS frame.
H2C_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def test_http2_cleartext_is_refused(server: AuthServer) -> None:
    """granian spoke HTTP/2 (answering with its SETTINGS frame), undocumented and with no
    bound on an unfinished header block; both servers speak HTTP/1.1 only."""
    answer = _exchange(server, H2C_PREFACE)
    # granian closes the connection; uvicorn answers the preface's request line in HTTP/1.1.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"])
def test_a_wrong_method_on_a_status_path_lists_get_and_head(server: AuthServer, path: str) -> None:
    answer = httpx.post(f"{server.url}{path}", timeout=10)
    assert answer.status_code == 405
    assert answer.json()["error"] == "http"
    assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200
    assert httpx.head(f"{server.url}{path}", timeout=10).status_code == 200


HOST_REFUSAL = "an HTTP/1.1 request needs exactly one Host header, with a host in it"


@pytest.mark.parametrize(
    "hosts", [b"", b"Host: a\r\nHost: b\r\n", b"Host: \r\n"], ids=["none", "two", "empty"]
)
@pytest.mark.parametrize("path", ["/token", "/healthz"])
def test_an_http11_request_without_exactly_one_host_is_a_json_400_naming_host(
    server: AuthServer, hosts: bytes, path: str
) -> None:
    """RFC 9112 §3.2. granian served these (it hands a missing Host on as an empty one);
    uvicorn refused a missing or second one in plain text and served an empty one."""
    request = f"GET {path} HTTP/1.1\r\n".encode() + hosts + b"Connection: close\r\n\r\n"
    answer = _exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert _json_body(answer) == {
        "details": HOST_REFUSAL, "error": "invalid_request", "parameter": "Host",
    }  # fmt: skip


def test_an_http10_request_without_host_is_served(server: AuthServer) -> None:
    answer = _exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith((b"HTTP/1.0 200 ", b"HTTP/1.1 200 ")), answer


@pytest.mark.parametrize("path", ["/token", "/healthz"])
def test_both_content_length_and_chunked_is_refused_and_the_connection_closed(
    server: AuthServer, path: str
) -> None:
    """RFC 9112 §6.1: a proxy in front framing the body by one header and this server by the
    other is how a request is smuggled past the proxy. uvicorn answered both requests here,
    the second one smuggled in, on a connection it kept open."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{len(FORM):x}\r\n"
        ).encode()
        + FORM
        + b"\r\n0\r\n\r\n"
        + smuggled
    )
    answer = _exchange(server, request)
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # nothing more on that connection
    if _granian(server):  # it drops Content-Length, frames by the chunks, then closes
        assert not answer.startswith(b"HTTP/1.1 5"), answer
    else:
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert _json_body(answer)["parameter"] == "Transfer-Encoding"


def test_no_openapi_schema_is_served(server: AuthServer) -> None:
    """It was, undocumented, while the docs it is for are off (nothing turns them on)."""
    answer = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"
