"""Refresh tokens over HTTP (in-process ASGI): the GET offline flow, the OAuth2 POST grants,
their errors, and every way a refresh token dies — with a fixed clock and a SQLite store."""

from __future__ import annotations

import base64
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
from httpx import AsyncClient, Response

from app.api.app import create_app
from app.authz.base import Requester
from app.errors import StateStoreError
from app.keys.store import load_keyring
from app.protocol.scopes import Scope
from app.service import TokenService
from app.settings import Settings, load_settings
from app.state.model import RefreshRecord
from app.state.refresh import RefreshPolicy, RefreshTokens, hash_token
from app.state.sqlite import SqliteStore
from tests.conftest import api_client

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000
LIFETIME = 90 * 86400
IDLE = 7 * 86400
SERVICE = "registry.test"


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass
class FixedClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


class SwitchableAuthorizer:
    """Grants the actions in `allowed` on repositories: lets a test change the ACL mid-way."""

    def __init__(self) -> None:
        self.allowed = {"pull", "push"}

    def authorize(self, requester: Requester, scopes: Sequence[Scope]) -> list[Scope]:
        if requester.anonymous:
            return [scope.with_actions(()) for scope in scopes]
        return [
            scope.with_actions(a for a in scope.actions if a in self.allowed) for scope in scopes
        ]


@dataclass
class Env:
    client: AsyncClient
    clock: FixedClock
    service: TokenService
    settings: Settings
    authorizer: SwitchableAuthorizer
    tokens: RefreshTokens

    @property
    def htpasswd(self) -> Path:
        assert self.settings.htpasswd is not None
        return self.settings.htpasswd

    def write_users(self, users: dict[str, str]) -> None:
        self.htpasswd.write_text("".join(f"{u}:{_hash(p)}\n" for u, p in users.items()))
        for item in self.service.reloadables:
            item.reload()


@pytest.fixture
def settings(rsa_keys_dir: Path, tmp_path: Path) -> Settings:
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text(f"alice:{_hash('s3cret')}\nbob:{_hash('b0b')}\n")
    return load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": str(htpasswd),
            "issuer": "test issuer",
            "service": SERVICE,
            "realm": "https://auth.test/api/v1/authorize/registry/",
            "refresh_token_lifetime": LIFETIME,
            "refresh_token_idle_timeout": IDLE,
            "state": {"path": str(tmp_path / "state.db")},
        }
    )


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[Env]:
    loaded = TokenService.from_settings(settings)
    clock = FixedClock()
    authorizer = SwitchableAuthorizer()
    tokens = RefreshTokens(SqliteStore(settings.state.path), RefreshPolicy(LIFETIME, IDLE))
    service = TokenService(
        settings,
        loaded.keyring_source,
        authenticator=loaded.authenticator,
        authorizer=authorizer,
        clock=clock,
        reloadables=loaded.reloadables,
        refresh_tokens=tokens,
    )
    async with api_client(create_app(settings, service)) as client:
        yield Env(client, clock, service, settings, authorizer, tokens)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _claims(token: str, keys_dir: Path) -> dict[str, Any]:
    return jwt.decode(
        token,
        load_keyring(keys_dir).active.certificate.public_key(),  # type: ignore[arg-type]
        algorithms=["RS256"],
        audience=SERVICE,
        issuer="test issuer",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )


async def _password_grant(env: Env, **extra: str) -> Response:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "s3cret",
        "service": SERVICE,
        "client_id": "containers/image",
        "access_type": "offline",
        **extra,
    }
    return await env.client.post("/token", data=form)


async def _refresh(
    env: Env, token: str, scope: str | list[str] = "", client_id: str = "containers/image"
) -> Response:
    form: dict[str, str | list[str]] = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "service": SERVICE,
        "client_id": client_id,
    }
    if scope:
        form["scope"] = scope
    return await env.client.post("/token", data=form)


async def _login(env: Env) -> str:
    response = await _password_grant(env)
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


# --- GET: docker login with offline_token=true -----------------------------------------------


async def _docker_login_get(env: Env) -> Response:
    """What `docker login` asks (protocol.md §1)."""
    params = {
        "service": SERVICE,
        "account": "alice",
        "client_id": "docker",
        "offline_token": "true",
    }
    return await env.client.get("/token", params=params, headers=_basic("alice", "s3cret"))


async def test_docker_login_get_with_offline_token_returns_a_refresh_token(env: Env) -> None:
    response = await _docker_login_get(env)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at", "refresh_token"}
    assert len(body["refresh_token"]) >= 43  # 256 bits, url-safe base64
    # docker then POSTs with that token and client_id=docker, scope space-separated.
    refreshed = await _refresh(
        env, body["refresh_token"], "repository:team/app:pull,push", "docker"
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["scope"] == "repository:team/app:pull,push"


@pytest.mark.parametrize(
    ("params", "auth"),
    [
        ({"offline_token": "false", "client_id": "docker"}, True),
        ({"client_id": "docker"}, True),
        ({"offline_token": "true"}, True),  # no client_id to bind the token to
        ({"offline_token": "true", "client_id": ""}, True),  # nor an empty one
        ({"offline_token": "true", "client_id": "docker"}, False),  # anonymous
    ],
)
async def test_get_returns_no_refresh_token_unless_asked_with_credentials_and_client(
    env: Env, params: dict[str, str], auth: bool
) -> None:
    headers = _basic("alice", "s3cret") if auth else {}
    response = await env.client.get(
        "/token", params={"service": SERVICE, **params}, headers=headers
    )
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    assert env.tokens.records() == []


async def test_head_mints_no_refresh_token_that_nobody_would_receive(env: Env) -> None:
    """A HEAD answer has no body: a refresh token made for it reached nobody, yet counted
    against the account's cap (and could push out a real docker login's)."""
    params = {"service": SERVICE, "client_id": "docker", "offline_token": "true"}
    response = await env.client.head("/token", params=params, headers=_basic("alice", "s3cret"))
    assert response.status_code == 200
    assert env.tokens.records() == []
    assert (await _docker_login_get(env)).status_code == 200
    assert len(env.tokens.records()) == 1  # GET, the same request, still gets one


async def test_an_empty_service_parameter_means_the_default_service(env: Env) -> None:
    """`service=` (a challenge with no service) as if it were absent, not an unknown ''."""
    response = await env.client.get(
        "/token", params={"service": ""}, headers=_basic("alice", "s3cret")
    )
    assert response.status_code == 200, response.text
    assert _claims(response.json()["token"], env.settings.keys_dir)["aud"] == SERVICE


@pytest.mark.parametrize("service", [None, ""], ids=["absent", "empty"])
async def test_a_post_without_a_service_means_the_default_service_as_a_get(
    env: Env, service: str | None
) -> None:
    """containers/image sends `service` only when the registry's challenge named one, docker
    and containerd then send it empty: both grants are for the default service, as on a GET."""
    login: dict[str, str] = {
        "grant_type": "password",
        "username": "alice",
        "password": "s3cret",
        "client_id": "containers/image",
        "access_type": "offline",
    }
    refresh = {"grant_type": "refresh_token", "client_id": "containers/image"}
    if service is not None:
        login["service"] = refresh["service"] = service
    answer = await env.client.post("/token", data=login)
    assert answer.status_code == 200, answer.text
    assert _claims(answer.json()["access_token"], env.settings.keys_dir)["aud"] == SERVICE
    refresh["refresh_token"] = answer.json()["refresh_token"]
    again = await env.client.post("/token", data=refresh)
    assert again.status_code == 200, again.text
    assert _claims(again.json()["access_token"], env.settings.keys_dir)["aud"] == SERVICE


# --- POST grant_type=password ------------------------------------------------------------------


async def test_password_grant_offline_returns_access_and_refresh_token(
    env: Env, rsa_keys_dir: Path
) -> None:
    response = await _password_grant(env, scope="repository:team/app:pull,push,delete")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["scope"] == "repository:team/app:pull,push"
    assert body["expires_in"] == 300
    assert body["issued_at"] == "2027-01-15T08:00:00Z"
    assert body["token_type"] == "Bearer"
    claims = _claims(body["access_token"], rsa_keys_dir)
    assert claims["sub"] == "alice"
    assert claims["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    ]
    [record] = env.tokens.records()
    assert (record.account, record.client_id, record.service) == (
        "alice",
        "containers/image",
        SERVICE,
    )
    assert record.expires_at == T0 + LIFETIME


async def test_password_grant_online_returns_no_refresh_token(env: Env) -> None:
    response = await _password_grant(env, access_type="online")
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    assert env.tokens.records() == []


async def test_scope_in_one_field_and_in_repeated_fields_mean_the_same(env: Env) -> None:
    token = await _login(env)
    one = await _refresh(env, token, "repository:a/b:pull repository:c/d:push")
    repeated = await _refresh(env, token, ["repository:a/b:pull", "repository:c/d:push"])
    assert one.status_code == repeated.status_code == 200
    assert (
        one.json()["scope"] == repeated.json()["scope"] == "repository:a/b:pull repository:c/d:push"
    )


async def test_scope_lists_only_what_was_granted(env: Env) -> None:
    token = await _login(env)
    body = (await _refresh(env, token, "registry:catalog:* repository:a/b:delete")).json()
    assert body["scope"] == ""


@pytest.mark.parametrize(("username", "password"), [("alice", "Wr0ngPass"), ("nobody", "s3cret")])
async def test_password_grant_with_bad_credentials_is_invalid_grant(
    env: Env, username: str, password: str
) -> None:
    response = await _password_grant(env, username=username, password=password)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert "wrong user name or password" in body["error_description"]
    assert password not in response.text
    assert env.tokens.records() == []


# --- POST grant_type=refresh_token ---------------------------------------------------------------


async def test_refresh_grant_returns_a_fresh_access_token_and_the_same_refresh_token(
    env: Env, rsa_keys_dir: Path
) -> None:
    token = await _login(env)
    env.clock.now = T0 + 3600
    response = await _refresh(env, token, "repository:team/app:pull")
    assert response.status_code == 200
    body = response.json()
    assert body["refresh_token"] == token
    claims = _claims(body["access_token"], rsa_keys_dir)
    assert claims["iat"] == T0 + 3600
    assert claims["sub"] == "alice"
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
    [record] = env.tokens.records()
    assert record.last_used_at == T0 + 3600


async def test_refresh_grant_evaluates_authorization_afresh(env: Env) -> None:
    token = await _login(env)
    assert (await _refresh(env, token, "repository:a/b:pull,push")).json()["scope"] == (
        "repository:a/b:pull,push"
    )
    env.authorizer.allowed = {"pull"}  # the ACL changed: push revoked
    assert (await _refresh(env, token, "repository:a/b:pull,push")).json()["scope"] == (
        "repository:a/b:pull"
    )


async def test_a_refresh_grant_for_a_service_not_ours_is_400(env: Env) -> None:
    # The binding of a token to one of our services: tests/unit/test_extra_services.py.
    token = await _login(env)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "service": "other.registry",
        "client_id": "containers/image",
    }
    response = await env.client.post("/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert (await _refresh(env, token)).status_code == 200  # at its own service it works


async def _docker_login(env: Env) -> str:
    response = await _docker_login_get(env)
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


@pytest.mark.parametrize("client_id", ["containerd-client", "containers/image", "docker"])
async def test_the_token_docker_login_stores_works_for_every_client_that_reads_it(
    env: Env, client_id: str
) -> None:
    # docker keeps it in ~/.docker/config.json; the docker daemon's containerd image store
    # and Kubernetes nodes (containerd) and skopeo/podman (containers/image) read it from there
    # and send their own fixed client_id. Bound to "docker", each of them got invalid_grant.
    token = await _docker_login(env)
    response = await _refresh(env, token, "repository:team/app:pull", client_id)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "repository:team/app:pull"
    # `tokens list` still shows the client it was issued to
    (record,) = env.tokens.store.records("alice")
    assert record.client_id == "docker"


async def test_refresh_token_same_client_refuses_another_client(env: Env) -> None:
    env.tokens.policy = RefreshPolicy(LIFETIME, IDLE, same_client=True)
    token = await _docker_login(env)
    refused = await _refresh(env, token, client_id="containerd-client")
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_grant"
    assert (await _refresh(env, token, client_id="docker")).status_code == 200


async def test_an_unknown_refresh_token_is_invalid_grant(env: Env) -> None:
    response = await _refresh(env, "x" * 43)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_grant"
    assert "log in again" in response.json()["error_description"]


# --- the ways a refresh token dies -------------------------------------------------------------


async def _assert_dead(env: Env, token: str) -> None:
    response = await _refresh(env, token, "repository:team/app:pull")
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_grant"
    assert "access_token" not in response.json()


async def test_revoked_refresh_token_stops_working(env: Env) -> None:
    token = await _login(env)
    other = await _login(env)
    record = env.tokens.store.find(hash_token(token))
    assert record is not None
    assert env.tokens.revoke([record], "test") == 1
    await _assert_dead(env, token)
    assert await _works(env, other)


async def _works(env: Env, token: str) -> bool:
    return (await _refresh(env, token)).status_code == 200


async def test_a_password_change_kills_the_accounts_refresh_tokens(env: Env) -> None:
    token = await _login(env)
    env.write_users({"alice": "n3w-password", "bob": "b0b"})
    await _assert_dead(env, token)
    assert env.tokens.records() == []  # and it is gone from the store
    # the new password logs in again
    assert (await _password_grant(env, password="n3w-password")).status_code == 200


async def test_rewriting_the_same_password_also_kills_it(env: Env) -> None:
    # A new bcrypt salt is a new entry: an operator resetting a password means "log in again".
    token = await _login(env)
    env.write_users({"alice": "s3cret", "bob": "b0b"})
    await _assert_dead(env, token)


async def test_another_accounts_password_change_leaves_the_token_alone(env: Env) -> None:
    token = await _login(env)
    assert env.settings.htpasswd is not None
    alice_line = env.settings.htpasswd.read_text().splitlines()[0]
    env.htpasswd.write_text(f"{alice_line}\nbob:{_hash('changed')}\n")
    for item in env.service.reloadables:
        item.reload()
    assert await _works(env, token)


async def test_removing_the_account_kills_its_refresh_tokens(env: Env) -> None:
    token = await _login(env)
    env.write_users({"bob": "b0b"})
    await _assert_dead(env, token)


async def test_a_refresh_token_expires_after_its_lifetime(env: Env) -> None:
    token = await _login(env)
    for day in range(1, 90):  # used daily: the idle timeout never strikes
        env.clock.now = T0 + day * 86400
        assert await _works(env, token), day
    env.clock.now = T0 + LIFETIME - 1
    assert await _works(env, token)
    env.clock.now = T0 + LIFETIME
    await _assert_dead(env, token)
    assert env.tokens.records() == []


async def test_a_refresh_token_dies_when_idle_too_long(env: Env) -> None:
    token = await _login(env)
    env.clock.now = T0 + IDLE - 1
    assert await _works(env, token)  # a use resets the idle clock
    env.clock.now = T0 + 2 * IDLE - 2
    assert await _works(env, token)
    env.clock.now = T0 + 3 * IDLE - 2
    await _assert_dead(env, token)


async def test_a_use_is_written_at_most_once_a_minute(env: Env) -> None:
    # docker makes a refresh grant for every pull and push: a write for each would cost more
    # than the grant. The idle clock may start up to TOUCH_INTERVAL early, never late.
    token = await _login(env)
    for moment, recorded in [(10, 0), (59, 0), (60, 60), (100, 60), (121, 121)]:
        env.clock.now = T0 + moment
        assert await _works(env, token), moment
        [record] = env.tokens.records()
        assert record.last_used_at == T0 + recorded, moment
    env.clock.now = T0 + 121 + IDLE - 1
    assert await _works(env, token)
    env.clock.now = T0 + 121 + IDLE - 1 + IDLE
    await _assert_dead(env, token)


class WhereFound:
    """The env's store, recording on which thread each `find` runs."""

    def __init__(self, inner: SqliteStore, *, local_reads: bool) -> None:
        self.inner, self.local_reads = inner, local_reads
        self.finds: list[int] = []

    def find(self, token_hash: str) -> Any:
        self.finds.append(threading.get_ident())
        return self.inner.find(token_hash)

    def __getattr__(self, name: str) -> Any:  # add, touch, records, delete, close
        return getattr(self.inner, name)


@pytest.mark.parametrize("local_reads", [True, False], ids=["sqlite", "over-the-network"])
async def test_a_good_refresh_token_is_looked_up_on_the_event_loop_if_local(
    env: Env, local_reads: bool
) -> None:
    token = await _login(env)
    assert isinstance(env.tokens.store, SqliteStore)
    store = WhereFound(env.tokens.store, local_reads=local_reads)
    env.tokens.store = store  # type: ignore[assignment]
    loop_thread = threading.get_ident()  # the test's event loop is the app's
    assert await _works(env, token)
    if local_reads:
        assert store.finds == [loop_thread]
    else:
        assert len(store.finds) == 1
        assert store.finds[0] != loop_thread
    # A token to refuse goes to a worker thread, which deletes it once dead.
    store.finds.clear()
    env.clock.now = T0 + LIFETIME
    await _assert_dead(env, token)
    assert store.finds[-1] != loop_thread
    assert env.tokens.records() == []


@pytest.mark.parametrize("same_client", [False, True])
def test_check_now_answers_only_a_good_token_and_never_deletes(
    tmp_path: Path, same_client: bool
) -> None:
    policy = RefreshPolicy(LIFETIME, IDLE, same_client=same_client)
    tokens = RefreshTokens(SqliteStore(tmp_path / "s.db"), policy)
    token, record = tokens.issue("alice", SERVICE, "docker", "v1", T0)
    assert tokens.check_now(token, SERVICE, "docker", T0 + 10) == record
    other_client = tokens.check_now(token, SERVICE, "containerd-client", T0 + 10)
    assert other_client == (None if same_client else record)
    for args in [
        ("unknown", SERVICE, "docker", T0),
        (token, "elsewhere", "docker", T0),
        (token, SERVICE, "docker", T0 + IDLE),
        (token, SERVICE, "docker", T0 + LIFETIME),
    ]:
        assert tokens.check_now(*args) is None, args
    assert tokens.records() == [record]  # refusing is for `check`, in a thread


async def test_the_token_layer_and_the_post_route_answer_alike(
    env: Env, settings: Settings
) -> None:
    # POST is answered ahead of FastAPI (app/api/token_get.py); FastAPI's route for it (the
    # OpenAPI description) gives the same answers.
    routed = create_app(settings, env.service)
    routed.token_layer = None  # type: ignore[attr-defined]
    token = await _login(env)
    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        (_form(token, "repository:team/app:pull"), {}),
        (_form(token, "repository:team/app:pull", grant_type="client_credentials"), {}),
        (_form("not-a-token", ""), {}),
        ({**_form(token, ""), "grant_type": "password", "username": "alice", "password": "no"}, {}),
        (_form(token, ""), {"Content-Type": "text/plain"}),
    ]
    async with api_client(routed) as route:
        for form, headers in cases:
            fast = await env.client.post("/token", data=form, headers=headers)
            slow = await route.post("/token", data=form, headers=headers)
            assert fast.status_code == slow.status_code, form
            fast_body, slow_body = fast.json(), slow.json()
            assert fast_body.keys() == slow_body.keys(), form
            for name in ("error", "error_description", "refresh_token", "scope", "expires_in"):
                assert fast_body.get(name) == slow_body.get(name), (form, name)
            for name in ("content-type", "cache-control", "pragma", "www-authenticate"):
                assert fast.headers.get(name) == slow.headers.get(name), (form, name)
            assert fast.headers["content-length"] == str(len(fast.content))
            assert len(fast.headers["x-request-id"]) == len(slow.headers["x-request-id"]) == 32


def _form(token: str, scope: str, grant_type: str = "refresh_token") -> dict[str, str]:
    return {
        "grant_type": grant_type,
        "refresh_token": token,
        "service": SERVICE,
        "client_id": "containers/image",
        "scope": scope,
    }


# --- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "error", "named"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", "client_credentials"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type", "authorization_code"),
        ({}, "invalid_request", "grant_type"),
        (
            {"grant_type": "password", "service": SERVICE, "client_id": "c", "password": "p"},
            "invalid_request",
            "username",
        ),
        (
            {"grant_type": "password", "service": SERVICE, "client_id": "c", "username": "alice"},
            "invalid_request",
            "password",
        ),
        (
            {"grant_type": "password", "service": SERVICE, "username": "a", "password": "p"},
            "invalid_request",
            "client_id",
        ),
        (
            {"grant_type": "refresh_token", "service": SERVICE, "client_id": "c"},
            "invalid_request",
            "refresh_token",
        ),
        (
            {
                "grant_type": "refresh_token",
                "service": SERVICE,
                "client_id": "c",
                "refresh_token": "",
            },
            "invalid_request",
            "refresh_token",
        ),
        (
            {
                "grant_type": "password",
                "service": SERVICE,
                "client_id": "c",
                "username": "alice",
                "password": "s3cret",
                "access_type": "forever",
            },
            "invalid_request",
            "access_type",
        ),
        (
            {
                "grant_type": "refresh_token",
                "service": SERVICE,
                "client_id": "c",
                "refresh_token": "t",
                "scope": "repository:UPPER:pull",
            },
            "invalid_request",
            "UPPER",
        ),
        (
            {
                "grant_type": "refresh_token",
                "service": "elsewhere",
                "client_id": "c",
                "refresh_token": "t",
            },
            "invalid_request",
            "elsewhere",
        ),
        (
            {
                "grant_type": "refresh_token",
                "service": SERVICE,
                "client_id": "c\x01",
                "refresh_token": "t",
            },
            "invalid_request",
            "client_id",
        ),
        (
            {
                "grant_type": "refresh_token",
                "service": SERVICE,
                "client_id": "c",
                "refresh_token": "t" * 4097,
            },
            "invalid_request",
            "refresh_token longer than 4096",
        ),
        (
            {
                "grant_type": "password",
                "service": SERVICE,
                "client_id": "c",
                "username": "alice",
                "password": "p" * 4097,
            },
            "invalid_request",
            "password longer than 4096",
        ),
        (
            {
                "grant_type": "password",
                "service": SERVICE,
                "client_id": "c",
                "username": "a" * 513,
                "password": "p",
            },
            "invalid_request",
            "username longer than 512",
        ),
    ],
)
async def test_malformed_posts_get_400_with_an_oauth2_error(
    env: Env, form: dict[str, str], error: str, named: str
) -> None:
    response = await env.client.post("/token", data=form)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == error
    assert named in body["error_description"]


async def test_a_field_given_twice_is_refused(env: Env) -> None:
    body = "grant_type=password&grant_type=refresh_token&service=registry.test&client_id=c"
    response = await env.client.post(
        "/token", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400
    assert "grant_type given more than once" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("content", "content_type", "named"),
    [
        (b'{"grant_type": "password"}', "application/json", "application/json"),
        (b"grant_type=password", None, "absent"),
        (
            b"&".join(b"f%d=1" % i for i in range(200)),
            "application/x-www-form-urlencoded",
            "fields",
        ),
        (b"grant_type=\xff", "application/x-www-form-urlencoded", "UTF-8"),
    ],
)
async def test_a_body_that_is_not_a_small_form_is_refused(
    env: Env, content: bytes, content_type: str | None, named: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await env.client.post("/token", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert named in response.json()["error_description"]


async def test_the_realm_path_takes_posts_too(env: Env) -> None:
    token = await _login(env)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "service": SERVICE,
        "client_id": "containers/image",
    }
    response = await env.client.post("/api/v1/authorize/registry/", data=form)
    assert response.status_code == 200


async def test_the_get_error_body_keeps_its_own_shape(env: Env) -> None:
    response = await env.client.get(
        "/token", params={"service": SERVICE}, headers=_basic("alice", "x")
    )
    assert response.status_code == 401
    assert set(response.json()) == {"details", "error"}
    assert response.headers["www-authenticate"].startswith("Basic ")


# --- secrets ----------------------------------------------------------------------------------


async def test_the_store_and_the_log_never_hold_the_refresh_token(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await _login(env)
    await _refresh(env, token)
    env.write_users({"bob": "b0b"})
    await _refresh(env, token)
    assert token not in caplog.text
    assert "account removed" in caplog.text  # the operator learns why
    raw = env.settings.state.path.read_bytes()
    assert token.encode() not in raw
    with sqlite3.connect(env.settings.state.path) as db:
        dump = "\n".join(db.iterdump())
    assert token not in dump


async def test_the_state_file_is_private(env: Env) -> None:
    await _login(env)
    assert env.settings.state.path.stat().st_mode & 0o077 == 0


def test_a_revocation_cut_off_midway_says_how_many_it_revoked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`tokens revoke --all` against 20,000 records, etcd gone midway: only the error, though
    1,190 were deleted already (and none of their log lines)."""

    class FailingLater:
        def __init__(self) -> None:
            self.calls = 0

        def delete(self, token_hashes: list[str]) -> int:
            self.calls += 1
            if self.calls == 3:
                raise StateStoreError("etcd v3 at http://etcd:2379: timed out")
            return len(token_hashes)

    caplog.set_level(logging.INFO)
    records = [
        RefreshRecord(f"id{n}", f"hash{n}", "alice", SERVICE, "docker", "v", T0, T0 + 9, T0)
        for n in range(400)
    ]
    tokens = RefreshTokens(FailingLater(), RefreshPolicy(LIFETIME, IDLE))  # type: ignore[arg-type]
    with pytest.raises(StateStoreError) as cut:
        tokens.revoke(records, "revoked with `registry-auth tokens revoke`")
    assert str(cut.value) == (
        "etcd v3 at http://etcd:2379: timed out (after 200 of 400 refresh token(s) were revoked: "
        "run it again for the rest)"
    )
    assert caplog.text.count("revoked refresh token id") == 200
