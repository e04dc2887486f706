"""An in-process service for hardening tests: htpasswd users, a settable clock, recorded sleeps,
brute-force counters in a temporary SQLite file, the audit log in a file."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx

from app.api.app import create_app
from app.assembly import refresh_tokens_from_settings
from app.service import TokenService
from app.settings import Settings, load_settings
from app.state.attempts import LoginThrottle
from app.state.sqlite import SqliteStore
from tests.conftest import api_client

NOW = 1_800_000_000.0
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "ci": "ci-pw"}
BRUTE_FORCE = {
    "account_ip_free": 2,
    "account_ip_block": 4,
    "ip_free": 5,
    "ip_block": 8,
    "initial_delay": 0.5,
    "max_delay": 1.0,
    "window": 60,
}


@dataclass
class Env:
    client: httpx.AsyncClient
    settings: Settings
    service: TokenService
    audit_path: Path
    sleeps: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [NOW])

    def audit(self) -> list[dict[str, Any]]:
        text = self.audit_path.read_text(encoding="ascii")
        return [json.loads(line) for line in text.splitlines()]

    async def login(
        self, account: str, password: str, ip: str = "10.0.0.1", **params: str
    ) -> httpx.Response:
        return await self.client.get(
            "/token",
            params={"service": "registry.test", **params},
            auth=(account, password),
            headers={"X-Forwarded-For": ip},
        )


def make_settings(tmp_path: Path, keys_dir: Path, **overrides: Any) -> Settings:
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text(
        "".join(
            f"{name}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
            for name, pw in PASSWORDS.items()
        )
    )
    values: dict[str, Any] = {
        "keys_dir": str(keys_dir),
        "htpasswd": str(htpasswd),
        "issuer": "test issuer",
        "service": "registry.test",
        "realm": "http://auth.test/token",
        "trusted_proxies": ["127.0.0.1/32"],
        "brute_force": BRUTE_FORCE,
        "audit_log": str(tmp_path / "audit.jsonl"),
        "state": {"path": str(tmp_path / "state.db")},
    }
    values.update(overrides)
    return load_settings(overrides=values)


@contextlib.asynccontextmanager
async def hardened_env(tmp_path: Path, keys_dir: Path, **overrides: Any) -> AsyncIterator[Env]:
    settings = make_settings(tmp_path, keys_dir, **overrides)
    loaded = TokenService.from_settings(settings)
    clock = [NOW]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    service = TokenService(
        settings,
        loaded.keyring_source,
        authenticator=loaded.authenticator,
        clock=lambda: clock[0],
        reloadables=loaded.reloadables,
        refresh_tokens=refresh_tokens_from_settings(settings),
        throttle=LoginThrottle(
            SqliteStore(settings.state.path), settings.brute_force, lambda: clock[0]
        ),
        sleep=sleep,
    )
    async with api_client(create_app(settings, service)) as client:
        yield Env(client, settings, service, tmp_path / "audit.jsonl", sleeps, clock)
