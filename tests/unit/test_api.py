"""The token endpoint over HTTP (in-process ASGI), with a fixed clock and fixed token ids."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import orjson
import pytest
from httpx import AsyncClient

from app.api.app import create_app, readiness
from app.keys.model import KeyRing
from app.keys.store import load_keyring
from app.service import TokenService
from app.settings import Settings, load_settings
from tests.conftest import api_client

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def settings(rsa_keys_dir: Path, tmp_path: Path) -> Settings:
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text(f"alice:{HASH}\n")
    return load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": str(htpasswd),
            "issuer": "test issuer",
            "service": "registry.test",
            "realm": "https://auth.test/api/v1/authorize/registry/",
            "token_ttl": 300,
        }
    )


@pytest.fixture
def service(settings: Settings) -> TokenService:
    loaded = TokenService.from_settings(settings)
    return TokenService(
        settings,
        loaded.keyring_source,
        authenticator=loaded.authenticator,
        clock=lambda: NOW + 0.75,
        id_source=lambda: "fixed-jti",
        reloadables=loaded.reloadables,
    )


@pytest.fixture
async def client(settings: Settings, service: TokenService) -> AsyncIterator[AsyncClient]:
    async with api_client(create_app(settings, service)) as test_client:
        yield test_client


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _decode(token: str, ring: KeyRing) -> dict[str, Any]:
    return jwt.decode(
        token,
        ring.active.certificate.public_key(),  # type: ignore[arg-type]
        algorithms=["RS256", "ES256"],
        audience="registry.test",
        issuer="test issuer",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )


async def test_login_without_scope_gets_a_token(client: AsyncClient, rsa_keys_dir: Path) -> None:
    params = {
        "service": "registry.test",
        "account": "alice",
        "client_id": "docker",
        "offline_token": "true",
    }
    response = await client.get("/token", params=params, headers=_basic("alice", "s3cret"))
    assert response.status_code == 200
    body = response.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"] == "2027-01-15T08:00:00Z"
    assert "refresh_token" not in body
    claims = _decode(body["token"], load_keyring(rsa_keys_dir))
    assert claims == {
        "iss": "test issuer",
        "sub": "alice",
        "aud": "registry.test",
        "exp": NOW + 300,
        "nbf": NOW - 60,  # a registry whose clock is behind ours still takes it
        "iat": NOW,
        "jti": "fixed-jti",
        "access": [],
    }


async def test_header_carries_libtrust_kid_and_the_certificate(
    client: AsyncClient, rsa_keys_dir: Path
) -> None:
    body = (await client.get("/token", params={"service": "registry.test"})).json()
    header = jwt.get_unverified_header(body["token"])
    ring = load_keyring(rsa_keys_dir)
    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"
    assert header["kid"] == ring.active.kid
    assert header["x5c"] == [ring.active.x5c]


async def test_granted_is_requested_intersect_allowed(
    client: AsyncClient, rsa_keys_dir: Path
) -> None:
    params = [
        ("service", "registry.test"),
        ("scope", "repository:team/app:pull,push,delete repository:127.0.0.1:5000/x/y:pull"),
        ("scope", "registry:catalog:*"),
    ]
    body = (await client.get("/token", params=params, headers=_basic("alice", "s3cret"))).json()
    assert _decode(body["token"], load_keyring(rsa_keys_dir))["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "127.0.0.1:5000/x/y", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": []},
    ]


async def test_anonymous_gets_a_token_with_nothing_granted(
    client: AsyncClient, rsa_keys_dir: Path
) -> None:
    params = {"service": "registry.test", "scope": "repository:team/app:pull"}
    body = (await client.get("/token", params=params)).json()
    claims = _decode(body["token"], load_keyring(rsa_keys_dir))
    assert claims["sub"] == ""
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": []}]


async def test_the_realm_path_serves_tokens_too(client: AsyncClient) -> None:
    response = await client.get("/api/v1/authorize/registry/", params={"service": "registry.test"})
    assert response.status_code == 200


async def test_head_and_get_answer_alike(client: AsyncClient) -> None:
    # GET is answered ahead of FastAPI (app/api/token_get.py); HEAD goes through FastAPI's
    # route: the same status and headers, and no body.
    params = {"service": "registry.test", "scope": "repository:team/app:pull"}
    get = await client.get("/token", params=params, headers=_basic("alice", "s3cret"))
    head = await client.head("/token", params=params, headers=_basic("alice", "s3cret"))
    assert (get.status_code, head.status_code) == (200, 200)
    for name in ("content-type", "cache-control", "content-length"):
        assert head.headers[name] == get.headers[name], name
    assert head.content == b""
    assert head.headers["x-request-id"] != get.headers["x-request-id"]
    refused = await client.head("/token", params={"service": "elsewhere"})
    assert refused.status_code == 400


@pytest.mark.parametrize(("user", "password"), [("alice", "Wr0ngPass"), ("nobody", "s3cret")])
async def test_bad_credentials_get_401_with_a_basic_challenge(
    client: AsyncClient, user: str, password: str
) -> None:
    response = await client.get(
        "/token", params={"service": "registry.test"}, headers=_basic(user, password)
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == (
        'Basic realm="https://auth.test/api/v1/authorize/registry/"'
    )
    assert "wrong user name or password" in response.json()["details"]
    assert password not in response.text


@pytest.mark.parametrize(
    ("params", "headers", "parameter"),
    [
        ({"service": "elsewhere"}, {}, "service"),
        ({"service": "registry.test", "scope": "repository:UPPER:pull"}, {}, "scope"),
        ({"service": "registry.test", "scope": "nonsense"}, {}, "scope"),
        ({"service": "registry.test", "offline_token": "maybe"}, {}, "offline_token"),
        ({"service": "registry.test"}, {"Authorization": "Basic !!!notbase64"}, "Authorization"),
        (
            {"service": "registry.test"},
            {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
            "Authorization",
        ),
        (
            {"service": "registry.test"},
            {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
            "Authorization",
        ),
        ({"service": "registry.test", "account": "a" * 600}, {}, "account"),
    ],
)
async def test_malformed_requests_get_400_naming_the_parameter(
    client: AsyncClient, params: dict[str, str], headers: dict[str, str], parameter: str
) -> None:
    response = await client.get("/token", params=params, headers=headers)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert body["details"]


async def test_an_unknown_service_is_told_the_one_this_server_serves(
    client: AsyncClient,
) -> None:
    response = await client.get("/token", params={"service": "elsewhere"})
    assert response.json() == {
        "details": "unknown service 'elsewhere': not a service this server issues tokens for "
        "(it issues them for 'registry.test')",
        "error": "invalid_service",
        "parameter": "service",
    }


async def test_a_service_given_twice_is_refused(client: AsyncClient) -> None:
    response = await client.get("/token?service=registry.test&service=other")
    assert response.status_code == 400
    assert response.json()["parameter"] == "service"


async def test_unknown_path_is_a_json_404(client: AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json()["details"]


async def test_health_and_readiness(client: AsyncClient, rsa_keys_dir: Path) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json()["active_kid"] == load_keyring(
        rsa_keys_dir
    ).active.kid


async def test_users_added_while_running_can_log_in(
    client: AsyncClient, settings: Settings, service: TokenService
) -> None:
    assert settings.htpasswd is not None
    settings.htpasswd.write_text(f"alice:{HASH}\nbob:{HASH}\n")
    for item in service.reloadables:
        item.reload_if_changed()
    response = await client.get(
        "/token", params={"service": "registry.test"}, headers=_basic("bob", "s3cret")
    )
    assert response.status_code == 200


async def test_a_broken_user_file_on_reload_keeps_the_old_users(
    client: AsyncClient, settings: Settings, service: TokenService
) -> None:
    assert settings.htpasswd is not None
    settings.htpasswd.write_text("alice:{SHA}broken\n")
    assert [item.reload() for item in service.reloadables] == [True, False]
    response = await client.get(
        "/token", params={"service": "registry.test"}, headers=_basic("alice", "s3cret")
    )
    assert response.status_code == 200


async def test_readyz_warns_of_a_failed_reload_without_the_path(
    client: AsyncClient, settings: Settings, service: TokenService
) -> None:
    assert settings.htpasswd is not None
    settings.htpasswd.write_text("alice:{SHA}not-bcrypt\n")
    for item in service.reloadables:
        item.reload_if_changed()
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready"  # the previous users still serve
    assert ready["warnings"] == [
        "the last reload of the htpasswd failed: the previous one still serves (see the log)"
    ]
    assert str(settings.htpasswd) not in str(ready)
    metrics = (await client.get("/metrics")).text
    assert 'registry_auth_reload_failing{files="htpasswd"} 1.0' in metrics
    assert str(settings.htpasswd) not in metrics  # /metrics is as open as /readyz


def test_readyz_warns_of_a_state_file_the_start_would_refuse(
    settings: Settings, tmp_path: Path
) -> None:
    """Replaced by another file: refresh grants got 503 and logins no refresh token, said only
    in the log; /readyz said nothing."""
    state = tmp_path / "state.db"
    configured = settings.model_copy(
        update={"state": settings.state.model_copy(update={"path": state})}
    )
    service = TokenService.from_settings(configured)
    warning = "the state file cannot be used: refresh grants get 503"

    def warnings() -> list[str]:
        body = orjson.loads(readiness(service, {"enabled": False}).body)
        return [w for w in body.get("warnings", []) if w.startswith(warning)]

    assert warnings() == []  # no file yet: the store makes it
    state.write_text("alice:not a database\n")
    assert len(warnings()) == 1
    assert str(state) not in warnings()[0]  # anyone may ask /readyz
    state.unlink()
    assert warnings() == []


async def test_an_invisible_character_is_called_so(client: AsyncClient) -> None:
    """A zero-width space was "control characters", which it is not."""
    response = await client.get("/token", params={"client_id": "dock\u200ber"})
    assert response.status_code == 400
    assert (
        response.json()["details"] == "parameter client_id holds a control or invisible character"
    )
