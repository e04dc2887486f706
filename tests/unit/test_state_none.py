"""`state.backend: none`: no refresh tokens (clients keep their password), login counters in
this process's memory."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from httpx import AsyncClient

from app.api.app import create_app
from app.cli import run
from app.settings import Settings, load_settings
from app.state.attempts import FailureStore
from app.state.memory import MemoryFailureStore
from tests.conftest import api_client
from tests.unit.hardening.failure_contract import FailureStoreContract

pytestmark = pytest.mark.anyio
SERVICE = "registry.test"


@pytest.fixture
def settings(rsa_keys_dir: Path, tmp_path: Path) -> Settings:
    htpasswd = tmp_path / "users.htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    return load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": str(htpasswd),
            "issuer": "test issuer",
            "service": SERVICE,
            "realm": "https://auth.test/token",
            "state": {"backend": "none", "path": str(tmp_path / "never.db")},
        }
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncClient]:
    async with api_client(create_app(settings)) as test_client:
        yield test_client


async def test_docker_login_gets_no_refresh_token(client: AsyncClient, settings: Settings) -> None:
    basic = base64.b64encode(b"alice:s3cret").decode()
    params = {"service": SERVICE, "offline_token": "true", "client_id": "docker"}
    response = await client.get(
        "/token", params=params, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    assert not settings.state.path.exists()  # nothing was written anywhere


async def test_a_password_grant_works_and_a_refresh_grant_is_refused(client: AsyncClient) -> None:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "s3cret",
        "service": SERVICE,
        "client_id": "containers/image",
        "access_type": "offline",
    }
    granted = await client.post("/token", data=form)
    assert granted.status_code == 200
    assert "refresh_token" not in granted.json()
    refresh = {"grant_type": "refresh_token", "refresh_token": "x" * 43, "service": SERVICE,
               "client_id": "containers/image"}  # fmt: skip
    refused = await client.post("/token", data=refresh)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_grant"


def test_tokens_cli_says_refresh_tokens_are_off(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        'issuer: "i"\nservice: "s"\nrealm: "http://127.0.0.1:5001/token"\nstate: {backend: none}\n'
    )
    assert run(["tokens", "list", "--config", str(config)], serve=lambda *_: None) == 2
    assert "state.backend: none" in capsys.readouterr().err


class TestMemoryFailureStore(FailureStoreContract):
    @pytest.fixture
    def failure_store(self) -> FailureStore:
        return MemoryFailureStore()


def test_the_memory_store_is_bounded() -> None:
    store = MemoryFailureStore(max_keys=3)
    store.add_failure(["a", "b", "c", "d"], now=100.0, window=60)
    assert set(store.failures(["a", "b", "c", "d"], now=100.0, window=60)) == {"b", "c", "d"}
