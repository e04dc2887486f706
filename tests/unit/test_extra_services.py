"""`extra_services`: one server issues tokens for several registries (prod, staging), each
token's `aud` the service it was asked for; the ACL tells them apart; nothing else is
accepted, and a refresh token stays with its service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
from httpx import AsyncClient

from app.api.app import create_app
from app.errors import ConfigError
from app.settings import load_settings
from tests.conftest import api_client

pytestmark = pytest.mark.anyio

ACL = """rules:
  - match: {account: alice, service: staging.registry}
    allow: [pull, push]
  - match: {account: alice}
    allow: [pull]
"""


def _settings(tmp_path: Path, keys_dir: Path, **extra: Any) -> Any:
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text("alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    acl = tmp_path / "acl.yaml"
    acl.write_text(ACL)
    overrides = {
        "keys_dir": str(keys_dir),
        "htpasswd": str(htpasswd),
        "acl": str(acl),
        "service": "prod.registry",
        "realm": "https://auth.test/token",
        "state": {"path": str(tmp_path / "state.db")},
        **extra,
    }
    return load_settings(overrides=overrides)


@pytest.fixture
async def client(tmp_path: Path, rsa_keys_dir: Path) -> AsyncIterator[AsyncClient]:
    settings = _settings(tmp_path, rsa_keys_dir, extra_services=["staging.registry"])
    async with api_client(create_app(settings)) as client:
        yield client


async def _token(client: AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/token", params=params, auth=("alice", "pw"))
    assert response.status_code == 200, response.text
    claims: dict[str, Any] = jwt.decode(
        response.json()["token"], options={"verify_signature": False}
    )
    return claims


async def test_each_service_gets_tokens_for_itself_and_its_acl_rules(client: AsyncClient) -> None:
    scope = "repository:team/app:pull,push"
    staging = await _token(client, service="staging.registry", scope=scope)
    assert staging["aud"] == "staging.registry"
    assert staging["access"][0]["actions"] == ["pull", "push"]
    prod = await _token(client, service="prod.registry", scope=scope)
    assert prod["aud"] == "prod.registry"
    assert prod["access"][0]["actions"] == ["pull"]
    assert (await _token(client))["aud"] == "prod.registry"  # no service named: the default


async def test_another_service_is_400_naming_only_the_main_one(client: AsyncClient) -> None:
    response = await client.get("/token", params={"service": "dev.registry"}, auth=("alice", "pw"))
    assert response.status_code == 400
    assert response.json()["details"] == (
        "unknown service 'dev.registry': not a service this server issues tokens for "
        "(its main one is 'prod.registry')"
    )  # not the other registries, which anyone could read; nor as if there were none


async def test_a_refresh_token_stays_with_its_service(client: AsyncClient) -> None:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "pw",
        "service": "staging.registry",
        "client_id": "docker",
        "access_type": "offline",
    }
    refresh = (await client.post("/token", data=form)).json()["refresh_token"]
    grant = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "docker"}
    assert (await client.post("/token", data={**grant, "service": "staging.registry"})).is_success
    refused = await client.post("/token", data={**grant, "service": "prod.registry"})
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "extra", [["prod.registry"], ["staging.registry", "staging.registry"], [""]]
)
def test_a_repeated_or_empty_service_is_refused(
    tmp_path: Path, rsa_keys_dir: Path, extra: list[str]
) -> None:
    with pytest.raises(ConfigError, match="extra_services"):
        _settings(tmp_path, rsa_keys_dir, extra_services=extra)
