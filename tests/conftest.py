"""Shared fixtures: settings and keys built in temporary directories."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.etcd import state as etcd_state
from app.keys.model import Algorithm, KeyRing
from app.keys.store import generate_key, load_keyring
from app.settings import Settings, load_settings


@pytest.fixture(scope="session")
def rsa_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys_dir = tmp_path_factory.mktemp("rsa-keys")
    generate_key(keys_dir, Algorithm.RS256)
    return keys_dir


@pytest.fixture(scope="session")
def ec_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys_dir = tmp_path_factory.mktemp("ec-keys")
    generate_key(keys_dir, Algorithm.ES256)
    return keys_dir


@pytest.fixture(scope="session")
def rsa_ring(rsa_keys_dir: Path) -> KeyRing:
    return load_keyring(rsa_keys_dir)


@pytest.fixture
def settings(rsa_keys_dir: Path, tmp_path: Path) -> Settings:
    return load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": None,
            "realm": "http://auth.test/token",
        }
    )


@pytest.fixture(autouse=True)
def _no_etcd_outage_left() -> None:
    """Which etcd state stores are down is kept per process (app.etcd.state: logged once, shown
    by /readyz): an outage one test's client saw is not the next test's."""
    etcd_state.forget_outages()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def api_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTP client for the app, with its lifespan running.

    (starlette's TestClient now warns on httpx, and warnings are errors here.)
    """
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
