"""Token reuse (fixed clock): the same grant under the same keys, policy and users gets the same
token while >= 80% of its lifetime remains; anything else gets a new one. Refresh tokens stay
per request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
from pydantic import SecretStr

from app.authn.base import Credentials
from app.keys.model import Algorithm
from app.keys.reuse import SignedToken, TokenReuse
from app.keys.store import generate_key
from app.protocol.oauth import PasswordGrant, RefreshGrant
from app.protocol.scopes import parse_scopes
from app.protocol.tokens import TokenRequest
from app.service import IssuedToken, TokenService
from app.settings import Settings, load_settings

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000
TTL = 300
PULL_PUSH = "rules:\n  - match: {account: alice}\n    allow: [pull, push]\n"
PULL_ONLY = "rules:\n  - match: {account: alice}\n    allow: [pull]\n"


class Clock:
    def __init__(self) -> None:
        self.now: float = NOW

    def __call__(self) -> float:
        return self.now


def make_settings(tmp_path: Path, **extra: Any) -> Settings:
    keys_dir = tmp_path / "keys"
    if not keys_dir.exists():
        generate_key(keys_dir, Algorithm.RS256)
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text("alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    acl = tmp_path / "acl.yaml"
    if not acl.exists():
        acl.write_text(PULL_PUSH)
    overrides = {
        "keys_dir": str(keys_dir),
        "htpasswd": str(htpasswd),
        "acl": str(acl),
        "service": "registry.test",
        "realm": "https://auth.test/token",
        "token_ttl": TTL,
        "state": {"path": str(tmp_path / "state.db")},
        **extra,
    }
    return load_settings(overrides=overrides)


def make_service(settings: Settings, clock: Clock) -> TokenService:
    return TokenService.from_settings(settings, clock=clock)


ALICE = Credentials("alice", SecretStr("pw"))


async def ask(service: TokenService, scope: str = "repository:team/app:pull,push") -> IssuedToken:
    request = TokenRequest("registry.test", tuple(parse_scopes([scope])))
    return await service.issue(request, ALICE)


def reload_all(service: TokenService) -> None:
    for item in service.reloadables:
        item.reload_if_changed()


async def test_a_reused_token_is_byte_identical_and_its_expires_in_shrinks(tmp_path: Path) -> None:
    clock = Clock()
    service = make_service(make_settings(tmp_path), clock)
    first = await ask(service)
    clock.now += 30
    second = await ask(service)
    assert second.token == first.token
    assert (first.reuse, second.reuse) == (False, True)  # what the audit line says
    assert (first.expires_in, second.expires_in) == (TTL, TTL - 30)
    assert (first.issued_at, second.issued_at) == (NOW, NOW + 30)
    # What a client computes as the expiry (issued_at + expires_in) is the token's own exp.
    claims = jwt.decode(second.token, options={"verify_signature": False})
    assert second.issued_at + second.expires_in == claims["exp"] == NOW + TTL


async def test_reuse_ends_when_less_than_the_share_remains(tmp_path: Path) -> None:
    clock = Clock()
    service = make_service(make_settings(tmp_path), clock)
    first = await ask(service)
    clock.now += TTL * 0.2  # exactly 80% left: still reused
    assert (await ask(service)).token == first.token
    clock.now += 1
    renewed = await ask(service)
    assert renewed.token != first.token
    assert (renewed.issued_at, renewed.expires_in) == (int(clock.now), TTL)


async def test_a_reused_token_always_has_a_minute_left(tmp_path: Path) -> None:
    # Clients take an expires_in under 60 s as 60 s and would send the token after it expired.
    clock = Clock()
    settings = make_settings(tmp_path, token_ttl=100, token_reuse_min_remaining=0.3)
    service = make_service(settings, clock)
    first = await ask(service)
    clock.now += 40  # 60 s left (the share asks for only 30): reused
    assert (await ask(service)).token == first.token
    clock.now += 1  # 59 s left
    renewed = await ask(service)
    assert renewed.token != first.token
    assert renewed.expires_in == 100


async def test_with_a_ttl_under_a_minute_no_token_is_reused(tmp_path: Path) -> None:
    clock = Clock()
    service = make_service(make_settings(tmp_path, token_ttl=30), clock)
    first = await ask(service)
    assert (await ask(service)).token != first.token


async def test_a_changed_acl_yields_a_new_token(tmp_path: Path) -> None:
    clock = Clock()
    settings = make_settings(tmp_path)
    service = make_service(settings, clock)
    first = await ask(service)
    assert settings.acl is not None
    settings.acl.write_text(PULL_ONLY)
    os.utime(settings.acl, ns=(NOW * 10**9, NOW * 10**9))  # a different mtime, surely
    reload_all(service)
    second = await ask(service)
    assert second.token != first.token
    assert [s.actions for s in second.granted] == [("pull",)]


async def test_a_reloaded_acl_with_the_same_grant_still_yields_a_new_token(tmp_path: Path) -> None:
    clock = Clock()
    settings = make_settings(tmp_path)
    service = make_service(settings, clock)
    first = await ask(service)
    assert settings.acl is not None
    settings.acl.write_text("# reviewed\n" + PULL_PUSH)
    reload_all(service)
    assert (await ask(service)).token != first.token


async def test_a_different_grant_is_a_different_token(tmp_path: Path) -> None:
    service = make_service(make_settings(tmp_path), Clock())
    push = await ask(service)
    pull = await ask(service, "repository:team/app:pull")
    other = await ask(service, "repository:team/other:pull,push")
    assert len({push.token, pull.token, other.token}) == 3


async def test_a_new_signing_key_yields_a_new_token(tmp_path: Path) -> None:
    clock = Clock()
    settings = make_settings(tmp_path)
    service = make_service(settings, clock)
    first = await ask(service)
    generate_key(settings.keys_dir, Algorithm.RS256)  # a new active key in the ring
    reload_all(service)
    second = await ask(service)
    assert second.token != first.token
    assert second.kid != first.kid


async def test_reuse_can_be_turned_off(tmp_path: Path) -> None:
    service = make_service(make_settings(tmp_path, token_reuse=False), Clock())
    first, second = await ask(service), await ask(service)
    assert first.token != second.token
    assert not second.reuse


async def test_refresh_tokens_are_still_issued_per_request(tmp_path: Path) -> None:
    service = make_service(make_settings(tmp_path), Clock())
    grant = PasswordGrant("registry.test", "docker", "alice", SecretStr("pw"), offline=True)
    first = await service.grant_password(grant)
    second = await service.grant_password(grant)
    assert first.token == second.token  # the access token is reused...
    assert first.refresh_token is not None
    assert second.refresh_token is not None
    assert first.refresh_token != second.refresh_token  # ...the refresh token is not


async def test_a_refresh_token_beside_a_reused_token_starts_now(tmp_path: Path) -> None:
    """Its lifetime counts from its own issue, not from the reused access token's `iat`: a
    short lifetime would otherwise hand out a refresh token already dead."""
    settings = make_settings(tmp_path, refresh_token_lifetime=20)
    clock = Clock()
    service = make_service(settings, clock)
    online = PasswordGrant("registry.test", "docker", "alice", SecretStr("pw"), offline=False)
    await service.grant_password(online)
    clock.now += 25
    grant = PasswordGrant("registry.test", "docker", "alice", SecretStr("pw"), offline=True)
    issued = await service.grant_password(grant)
    assert issued.reuse
    assert issued.refresh_token is not None
    assert service.refresh_tokens is not None
    (record,) = service.refresh_tokens.records("alice")
    assert (record.created_at, record.expires_at) == (NOW + 25, NOW + 45)
    refresh = RefreshGrant("registry.test", "docker", SecretStr(issued.refresh_token))
    assert (await service.grant_refresh(refresh)).account == "alice"


def test_the_reuse_table_is_bounded() -> None:
    reuse = TokenReuse(0.8, max_entries=3)
    for n in range(10):
        reuse.put(("acct", n), (), SignedToken(f"t{n}", NOW, NOW + TTL, f"j{n}", "kid"))
    assert len(reuse) == 3
    assert reuse.get(("acct", 9), (), NOW) is not None
    assert reuse.get(("acct", 0), (), NOW) is None
