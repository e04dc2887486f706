"""Input limits (400/413/431 JSON before any handler), request ids, the audit log, /metrics."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.api.audit import FIELDS, Decision
from app.errors import AuthorizationUnavailableError, BackendUnavailableError
from tests.unit.hardening.env import Env, hardened_env

pytestmark = pytest.mark.anyio


@pytest.fixture
async def env(tmp_path: Path, rsa_keys_dir: Path) -> AsyncIterator[Env]:
    async with hardened_env(tmp_path, rsa_keys_dir) as env:
        yield env


@pytest.mark.parametrize(
    ("headers", "status", "named"),
    [
        ({"Authorization": "Basic " + "A" * 5000}, 431, "Authorization"),
        ({"X-Padding": "p" * 9000}, 431, "headers exceed"),
    ],
)
async def test_oversized_headers_get_431(
    env: Env, headers: dict[str, str], status: int, named: str
) -> None:
    response = await env.client.get("/token", params={"service": "registry.test"}, headers=headers)
    assert response.status_code == status
    assert named in response.json()["details"]
    assert env.audit_path.read_text() == ""  # refused before the handler: no decision made


async def test_a_long_query_string_gets_400(env: Env) -> None:
    response = await env.client.get("/token", params={"scope": "x" * 9000})
    assert response.status_code == 400
    assert response.json()["parameter"] == "query"
    assert response.json()["error"] == "invalid_request"  # the code of every other 400


async def test_a_big_body_gets_413_declared_or_streamed(env: Env) -> None:
    big = b"grant_type=password&x=" + b"a" * 20000
    declared = await env.client.post(
        "/token", content=big, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert declared.status_code == 413
    # A POST is an OAuth2 grant: its errors also carry `error_description` (README).
    assert declared.json() == {
        "details": "request body exceeds 16384 bytes",
        "error": "request_too_large",
        "error_description": "request body exceeds 16384 bytes",
    }

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"a" * 1000

    streamed = await env.client.post("/token", content=chunks())
    assert streamed.status_code == 413


async def test_limits_are_configurable(tmp_path: Path, rsa_keys_dir: Path) -> None:
    limits = {"max_query_length": 256, "max_body_bytes": 1024}
    async with hardened_env(tmp_path, rsa_keys_dir, limits=limits) as env:
        assert (await env.client.get("/token", params={"service": "s" * 300})).status_code == 400
        assert (await env.client.post("/token", content=b"a" * 1500)).status_code == 413


async def test_a_raised_body_limit_lets_a_bigger_form_in(
    tmp_path: Path, rsa_keys_dir: Path
) -> None:
    """A form above 16 KiB under a raised `max_body_bytes` (a second, fixed 16 KiB check in
    the form parser refused it with a 400 naming a limit nobody had set)."""
    async with hardened_env(tmp_path, rsa_keys_dir, limits={"max_body_bytes": 65536}) as env:
        form = {"grant_type": "password", "username": "alice", "password": "alice-pw"}
        form |= {"service": "registry.test", "client_id": "ci", "padding": "p" * 20000}
        response = await env.client.post("/token", data=form)
        assert response.status_code == 200, response.text
        form["padding"] = "p" * 70000
        assert (await env.client.post("/token", data=form)).status_code == 413


async def test_a_raised_authorization_limit_lets_a_long_password_in(
    tmp_path: Path, rsa_keys_dir: Path
) -> None:
    """A CI job's ID token as a Basic password can outgrow 4096 bytes once base64-encoded;
    raising the setting is enough (a second, fixed 4096 in the Basic parser refused it)."""
    limits = {"max_authorization_length": 16384, "max_header_bytes": 20000}
    async with hardened_env(tmp_path, rsa_keys_dir, limits=limits) as env:
        response = await env.login("ci", "x" * 5000)
        assert response.status_code == 401, response.text  # parsed and checked: wrong password


async def test_a_request_id_is_echoed_or_made(env: Env) -> None:
    mine = await env.client.get("/healthz", headers={"X-Request-ID": "build-42.step:7"})
    assert mine.headers["X-Request-ID"] == "build-42.step:7"
    unsafe = await env.client.get("/healthz", headers={"X-Request-ID": "a b\tc"})
    assert len(unsafe.headers["X-Request-ID"]) == 32
    assert unsafe.headers["X-Request-ID"] != mine.headers["X-Request-ID"]


async def test_one_audit_line_per_decision_with_every_field(env: Env) -> None:
    granted = await env.client.get(
        "/token",
        params={"service": "registry.test", "scope": "repository:alice/app:pull,push,delete"},
        auth=("alice", "alice-pw"),
        headers={"X-Forwarded-For": "192.0.2.10", "X-Request-ID": "req-1"},
    )
    assert granted.status_code == 200
    await env.login("alice", "wrong")
    await env.login("nobody-here", "wrong")
    await env.client.get("/token", params={"scope": "bogus"})
    await env.client.get("/token", params={"scope": "repository:bob/app:pull"})  # anonymous
    await env.login("alice", "alice-pw")  # docker login: no scope asked, nothing denied
    lines = env.audit()
    assert [line["outcome"] for line in lines] == [
        "partial", "unauthorized", "unauthorized", "invalid", "denied", "granted",
    ]  # fmt: skip
    assert lines[4]["reason"] == "no requested action is allowed"
    # The operator learns which of the two it was; the client, the same message both times.
    message = "unauthorized: authentication failed: wrong user name or password"
    assert lines[1]["reason"] == f"{message} (wrong password)"
    assert lines[2]["reason"] == f"{message} (unknown account)"
    first = lines[0]
    assert tuple(first) == FIELDS
    assert first["request_id"] == "req-1"
    assert first["client_ip"] == "192.0.2.10"
    assert first["account"] == "alice"
    assert first["service"] == "registry.test"
    assert first["requested"] == ["repository:alice/app:pull,push,delete"]
    assert first["granted"] == ["repository:alice/app:pull,push"]
    assert first["kid"] == env.service.keyring.active.kid
    assert first["jti"]
    assert first["reuse"] is False
    assert lines[3]["reason"].startswith("invalid_scope")


async def test_the_audit_log_never_holds_a_secret(env: Env) -> None:
    login = await env.client.get(
        "/token",
        params={"service": "registry.test", "offline_token": "true", "client_id": "docker"},
        auth=("alice", "alice-pw"),
    )
    refresh_token = login.json()["refresh_token"]
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "service": "registry.test",
        "client_id": "docker",
    }
    refreshed = await env.client.post("/token", data=form)
    assert refreshed.status_code == 200
    await env.login("alice", "Wr0ng-Secret")
    text = env.audit_path.read_text()
    for secret in (
        "alice-pw",
        "Wr0ng-Secret",
        refresh_token,
        login.json()["token"],
        refreshed.json()["access_token"],
    ):
        assert secret not in text
    grants = [line["grant"] for line in env.audit()]
    assert grants == ["get", "refresh_token", "get"]
    assert env.audit()[1]["account"] == "alice"


async def test_a_refused_refresh_grant_names_the_account_of_its_token(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """It said `"account": null`; an expired token's record is deleted as it is refused, so
    nothing else told an operator whose docker had stopped pulling."""
    caplog.set_level(logging.INFO)
    login = await env.client.get(
        "/token",
        params={"service": "registry.test", "offline_token": "true", "client_id": "docker"},
        auth=("alice", "alice-pw"),
    )
    form = {"grant_type": "refresh_token", "refresh_token": login.json()["refresh_token"]}
    form |= {"client_id": "docker"}
    other = await env.client.post("/token", data=form | {"service": "elsewhere.test"})
    assert other.status_code == 400  # not one of this server's services: no record looked up
    env.clock[0] += env.settings.refresh_token_lifetime
    expired = await env.client.post("/token", data=form | {"service": "registry.test"})
    unknown = await env.client.post("/token", data=form | {"refresh_token": "x" * 43})
    assert [expired.status_code, unknown.status_code] == [401, 401]
    lines = env.audit()[1:]
    assert [line["outcome"] for line in lines] == ["invalid", "unauthorized", "unauthorized"]
    assert [line["account"] for line in lines] == [None, "alice", None]
    assert "has expired" in lines[1]["reason"]
    assert "has expired (account 'alice')" in caplog.text


@pytest.mark.parametrize("service", [None, ""], ids=["absent", "empty"])
async def test_a_grant_that_names_no_service_is_audited_with_null(
    env: Env, service: str | None
) -> None:
    """docker and containerd POST `service` empty: the line said "" where a GET said null."""
    form = {"grant_type": "password", "username": "alice", "password": "alice-pw"}
    form |= {"client_id": "containerd"} | ({} if service is None else {"service": service})
    assert (await env.client.post("/token", data=form)).status_code == 200
    await env.client.get("/token", params={"service": service} if service is not None else {})
    assert [line["service"] for line in env.audit()] == [None, None]


async def test_a_request_refused_for_its_form_still_says_its_service_and_client(
    env: Env,
) -> None:
    """`service` and `client_id` were null on every line of a request refused while it was
    parsed, though it named them: an operator could not tell which registry sent it."""
    await env.client.get(
        "/token", params={"service": "registry.test", "client_id": "docker", "scope": "bad"}
    )
    await env.client.post(
        "/token", data={"grant_type": "foo", "service": "registry.test", "client_id": "ci"}
    )
    # Named twice: which one would be a guess; and a refusal of the service itself.
    await env.client.get("/token?service=a&service=b&client_id=docker&scope=bad")
    lines = env.audit()
    assert [line["outcome"] for line in lines] == ["invalid"] * 3
    assert [(line["service"], line["client_id"]) for line in lines] == [
        ("registry.test", "docker"),
        ("registry.test", "ci"),
        (None, "docker"),
    ]


async def test_metrics_name_every_documented_family(env: Env) -> None:
    await env.login("alice", "alice-pw")
    await env.login("alice", "nope")
    response = await env.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        'registry_auth_requests_total{endpoint="token",outcome="success"}',
        'registry_auth_requests_total{endpoint="token",outcome="unauthorized"}',
        'registry_auth_request_duration_seconds_bucket{endpoint="token",le="0.005"}',
        'registry_auth_password_checks_total{result="accepted"}',
        'registry_auth_password_checks_total{result="rejected"}',
        "registry_auth_password_cache_hits_total",
        "registry_auth_refresh_grants_total",
        "registry_auth_bruteforce_throttles_total",
        f'registry_auth_certificate_expiry_seconds{{kid="{env.service.keyring.active.kid}"}}',
    ):
        assert name in text, name
    # No etcd configured: no etcd gauges (a 0 would fire an alert on "not published").
    assert "registry_auth_etcd_publish" not in text


@pytest.mark.parametrize(
    ("method", "endpoint"), [("GET", "token"), ("POST", "token_post")], ids=["get", "post"]
)
async def test_each_token_request_is_counted_under_its_endpoint(
    env: Env, method: str, endpoint: str
) -> None:
    series = f'registry_auth_requests_total{{endpoint="{endpoint}",outcome="success"}} '

    async def counted() -> float:
        text = (await env.client.get("/metrics")).text
        lines = [line for line in text.splitlines() if line.startswith(series)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = await counted()
    if method == "GET":
        response = await env.login("alice", "alice-pw")
    else:
        form = {"grant_type": "password", "username": "alice", "password": "alice-pw"}
        form |= {"service": "registry.test", "client_id": "containerd"}
        response = await env.client.post("/token", data=form)
    assert response.status_code == 200, response.text
    assert await counted() == before + 1


async def test_basic_credentials_stay_out_of_the_audit_when_malformed(env: Env) -> None:
    raw = base64.b64encode(b"eve\r\nX-Injected: 1:pw").decode()
    response = await env.client.get(
        "/token", params={"service": "registry.test"}, headers={"Authorization": f"Basic {raw}"}
    )
    assert response.status_code == 400
    assert "\r" not in env.audit_path.read_text()
    assert env.audit()[0]["account"] is None


README = Path(__file__).resolve().parents[3] / "README.md"


def _section_table_keys(heading: str) -> list[str]:
    text = README.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ")[0]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [row.split("`")[1] for row in rows]


def test_the_readme_documents_exactly_the_audit_fields() -> None:
    assert tuple(_section_table_keys("Audit log")) == FIELDS


async def test_the_readme_documents_exactly_the_metrics(env: Env) -> None:
    documented = set(_section_table_keys("Metrics"))
    await env.login("alice", "alice-pw")
    exported = {
        line.split()[2].removesuffix("_total")
        for line in (await env.client.get("/metrics")).text.splitlines()
        if line.startswith("# TYPE registry_auth_")
    }
    documented_bases = {name.removesuffix("_total") for name in documented}
    # The TLS gauge appears only with `tls` configured, the robots' with a robots backend
    # (tests/unit/test_robot_expiry.py), the etcd ones with `etcd` (tests/integration/test_etcd.py).
    conditional = {
        "registry_auth_etcd_published",
        "registry_auth_etcd_publish_failures",
        "registry_auth_tls_certificate_expiry_seconds",
        "registry_auth_robot_next_expiry_seconds",
        "registry_auth_robots_expired",
    }
    assert exported == documented_bases - conditional


def test_building_the_app_does_not_import_prometheus_client(rsa_keys_dir: Path) -> None:
    """Its storage mode is fixed at first import: the server must be able to set
    PROMETHEUS_MULTIPROC_DIR after the app is built (app.api.hardening.harden)."""
    code = (
        "import sys\n"
        "from app.api.app import create_app\n"
        "from app.settings import load_settings\n"
        f"create_app(load_settings(overrides={{'keys_dir': {str(rsa_keys_dir)!r}, "
        "'htpasswd': None, 'audit_log': None}))\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            BackendUnavailableError("corp", "LDAPSocketOpenError: timed out"),
            "backend_unavailable: authentication backend 'corp' is unavailable; try again later "
            "(LDAPSocketOpenError: timed out)",
        ),
        (
            AuthorizationUnavailableError("projects", "HTTP 500"),
            "backend_unavailable: authorization webhook 'projects' is unavailable; try again "
            "later (HTTP 500)",
        ),
    ],
)
def test_an_outage_is_audited_naming_the_backend_and_why(
    error: BackendUnavailableError, reason: str
) -> None:
    """The line said `backend_unavailable: BackendUnavailableError`, naming neither."""
    decision = Decision("rid", "192.0.2.1", "get")
    decision.refused(error)
    assert (decision.outcome, decision.reason) == ("unavailable", reason)
