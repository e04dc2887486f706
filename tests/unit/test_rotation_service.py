"""The running service and the key ring: JWKS endpoint, certificate expiry in /readyz and at
signing time (503, not 500), and instances sharing a keys dir following a promotion."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.api.app import create_app
from app.keys import ring
from app.keys.model import Algorithm
from app.keys.store import add_key, generate_key, update_ring
from app.service import TokenService
from app.settings import Settings, load_settings

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_settings(keys_dir: Path, **extra: object) -> Settings:
    return load_settings(
        overrides={
            "keys_dir": str(keys_dir),
            "htpasswd": None,
            "realm": "http://auth.test/token",
            **extra,
        }
    )


class Client:
    """Requests to the ASGI app in process (httpx's ASGI transport; no lifespan, no network)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        return asyncio.run(self.aget(path, params))

    async def aget(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as client:
            return await client.get(path, params=params)


def client_at(settings: Settings, moment: datetime) -> Client:
    service = TokenService.from_settings(settings, clock=moment.timestamp)
    return Client(create_app(settings, service))


def keys_with_cert_ending(tmp_path: Path, not_after: datetime) -> Path:
    keys_dir = tmp_path / "keys"
    # Valid from a year before it ends, so from before NOW (not valid yet is a state of its own)
    generate_key(keys_dir, Algorithm.ES256, clock=lambda: not_after - timedelta(days=365))
    return keys_dir


def anonymous_token(client: Client) -> httpx.Response:
    return client.get("/token", params={"service": "registry.local"})


def test_jwks_endpoint_lists_every_published_key(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    active = generate_key(keys_dir, Algorithm.RS256)
    added = add_key(keys_dir, Algorithm.ES256)
    client = Client(create_app(make_settings(keys_dir)))

    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert [(k["kid"], k["kty"], k["alg"]) for k in response.json()["keys"]] == [
        (active.kid, "RSA", "RS256"),
        (added.kid, "EC", "ES256"),
    ]
    thumbprints = client.get("/.well-known/jwks.json", params={"kid_format": "rfc7638"})
    assert [len(k["kid"]) for k in thumbprints.json()["keys"]] == [43, 43]
    bad = client.get("/.well-known/jwks.json", params={"kid_format": "md5"})
    assert bad.status_code == 400
    assert bad.json()["parameter"] == "kid_format"


def test_readyz_is_quiet_with_a_fresh_certificate(tmp_path: Path) -> None:
    client = client_at(
        make_settings(keys_with_cert_ending(tmp_path, NOW + timedelta(days=60))), NOW
    )
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["certificate"]["state"] == "ok"
    assert "warnings" not in body


def test_readyz_and_log_warn_within_the_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys_dir = keys_with_cert_ending(tmp_path, NOW + timedelta(days=6))
    settings = make_settings(keys_dir, certificate_warning_days=7)
    with caplog.at_level(logging.WARNING, logger="app.keys.expiry"):
        client = client_at(settings, NOW)
        response = client.get("/readyz")
        client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["certificate"]["state"] == "expiring"
    assert "expires at 2026-03-07 12:00Z" in response.json()["warnings"][0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per change, not once per probe
    assert "rotate the key" in warnings[0]
    assert anonymous_token(client).status_code == 200  # still signs


def test_expired_certificate_in_x5c_is_a_503_json_not_a_500(tmp_path: Path) -> None:
    keys_dir = keys_with_cert_ending(tmp_path, NOW - timedelta(seconds=1))
    client = client_at(make_settings(keys_dir), NOW)
    response = anonymous_token(client)
    assert response.status_code == 503
    assert response.json()["error"] == "signing_unavailable"
    assert "certificate has expired" in response.json()["details"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"


def test_a_running_service_stops_signing_the_moment_its_certificate_expires(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The expiry state is kept between tokens and worked out again only when the clock crosses
    # a boundary (warning window, expiry): both crossings must still happen on time.
    keys_dir = keys_with_cert_ending(tmp_path, NOW + timedelta(days=7, seconds=10))
    settings = make_settings(keys_dir, certificate_warning_days=7)
    clock = [NOW.timestamp()]
    service = TokenService.from_settings(settings, clock=lambda: clock[0])
    client = Client(create_app(settings, service))
    with caplog.at_level(logging.WARNING, logger="app.keys.expiry"):
        assert anonymous_token(client).status_code == 200
        clock[0] += 11  # now inside the warning window: still signs, warns once
        assert anonymous_token(client).status_code == 200
        assert anonymous_token(client).status_code == 200
        clock[0] += 7 * 86400 - 2  # the certificate's last second
        assert anonymous_token(client).status_code == 200
        clock[0] += 1  # expired
        assert anonymous_token(client).status_code == 503
        clock[0] -= 2  # a clock stepped back: signs again
        assert anonymous_token(client).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [("expires at" in w, "expired at" in w) for w in warnings[:2]] == [
        (True, False),
        (False, True),
    ]


def test_a_certificate_not_valid_yet_is_a_503_until_it_is(tmp_path: Path) -> None:
    """A key made on a host whose clock ran ahead: the service said ready and signed tokens
    that every registry rejected (`x509: certificate has expired or is not yet valid`)."""
    keys_dir = tmp_path / "keys"
    generate_key(keys_dir, Algorithm.ES256, clock=lambda: NOW + timedelta(days=2))
    settings = make_settings(keys_dir)
    clock = [NOW.timestamp()]
    client = Client(
        create_app(settings, TokenService.from_settings(settings, clock=lambda: clock[0]))
    )
    response = anonymous_token(client)
    assert response.status_code == 503
    assert response.json()["error"] == "signing_unavailable"
    assert "certificate is not valid yet" in response.json()["details"]
    assert response.headers["retry-after"] == "60"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["certificate"]["state"] == "not_yet_valid"
    assert ready.json()["certificate"]["not_before"] == "2026-03-03T11:55:00+00:00"
    assert "is not valid before 2026-03-03 11:55:00Z" in ready.json()["warnings"][0]
    clock[0] = (NOW + timedelta(days=2, minutes=-5)).timestamp()  # its first second
    assert anonymous_token(client).status_code == 200
    assert client.get("/readyz").json()["certificate"]["state"] == "ok"
    # Without x5c a registry matches the kid alone and never sees the dates: it signs.
    clock[0] = NOW.timestamp()
    lenient = make_settings(keys_dir, x5c=False)
    service = TokenService.from_settings(lenient, clock=lambda: clock[0])
    assert anonymous_token(Client(create_app(lenient, service))).status_code == 200


def test_a_post_while_no_token_can_be_signed_says_so_in_the_oauth2_shape(
    tmp_path: Path,
) -> None:
    """It said `"error": "invalid_request"`, which blames the client."""
    keys_dir = keys_with_cert_ending(tmp_path, NOW - timedelta(seconds=1))
    users = tmp_path / "users.htpasswd"
    users.write_text(f"a:{bcrypt.hashpw(b'b', bcrypt.gensalt(rounds=4)).decode()}\n")
    client = client_at(make_settings(keys_dir, htpasswd=str(users)), NOW)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as http:
            form = {"grant_type": "password", "username": "a", "password": "b", "client_id": "c"}
            return await http.post("/token", data=form)

    response = asyncio.run(post())
    assert response.status_code == 503
    assert response.json()["error"] == "signing_unavailable"
    assert "certificate has expired" in response.json()["error_description"]
    assert response.headers["retry-after"] == "60"


def test_expired_certificate_without_x5c_still_signs_with_a_warning(tmp_path: Path) -> None:
    keys_dir = keys_with_cert_ending(tmp_path, NOW - timedelta(seconds=1))
    client = client_at(make_settings(keys_dir, x5c=False), NOW)
    assert anonymous_token(client).status_code == 200
    assert client.get("/readyz").json()["certificate"]["state"] == "expired"


def test_two_instances_sharing_a_keys_dir_follow_a_promotion(tmp_path: Path) -> None:
    """Each instance runs its own polling task (the app lifespan); one promote reaches both."""
    keys_dir = tmp_path / "keys"
    old = generate_key(keys_dir, Algorithm.ES256)
    settings = make_settings(keys_dir, reload_interval=0.05)
    instances = [Client(create_app(settings)), Client(create_app(settings))]
    new = add_key(keys_dir, Algorithm.ES256)
    seen = asyncio.run(_promote_while_running(instances, keys_dir, new.kid))
    for kid_in_token, jwks_kids in seen:
        assert kid_in_token == new.kid
        assert jwks_kids == [old.kid, new.kid]


async def _promote_while_running(
    instances: list[Client], keys_dir: Path, kid: str
) -> list[tuple[str, list[str]]]:
    one, two = (client.app for client in instances)
    async with one.router.lifespan_context(one), two.router.lifespan_context(two):
        first = await instances[0].aget("/readyz")
        assert first.json()["active_kid"] != kid
        update_ring(keys_dir, lambda e: ring.promote(e, kid, datetime.now(UTC)))
        return [await _followed(client, kid) for client in instances]


async def _followed(client: Client, kid: str) -> tuple[str, list[str]]:
    deadline = time.monotonic() + 10
    while (await client.aget("/readyz")).json()["active_kid"] != kid:
        assert time.monotonic() < deadline, "an instance did not follow the promotion"
        await asyncio.sleep(0.05)
    token: dict[str, Any] = (await client.aget("/token", {"service": "registry.local"})).json()
    jwks = (await client.aget("/.well-known/jwks.json")).json()
    return jwt.get_unverified_header(token["token"])["kid"], [k["kid"] for k in jwks["keys"]]
