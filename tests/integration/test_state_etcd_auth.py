"""The etcd state store with etcd's v3 auth on (the real etcd 3.4): refresh tokens and login
counters written and read as the configured user, logging in again once etcd forgot the token,
and a wrong password a clear error: StateStoreError in the store, 503 at the token endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from app.api.app import create_app
from app.errors import StateStoreError
from app.etcd.failure_store import EtcdFailureStore
from app.etcd.refresh_store import EtcdRefreshStore
from app.etcd.state import open_state_client
from app.etcd.v3 import GatewayBackend
from app.service import TokenService
from app.settings import load_settings
from app.settings_sections import EtcdSettings, StateSettings
from app.state.refresh import RefreshPolicy, RefreshTokens
from tests.conftest import api_client
from tests.integration.support.authserver import start_auth_server
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.support.stack import USERS
from tests.integration.test_refresh_tokens import password_grant, refresh_grant, refresh_token_for
from tests.unit.hardening.failure_contract import FailureStoreContract
from tests.unit.test_state_sqlite import StoreContract

PASSWORD = "state-Password-1"
WRONG = "wrong-Password-9"
TOKEN_TTL = 2  # seconds etcd keeps an idle auth token: short, so logging in again is exercised


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    workdir = tmp_path_factory.mktemp("etcd-auth")
    server = start_etcd(workdir, extra_args=(f"--auth-token-ttl={TOKEN_TTL}",))
    server.enable_auth("v3", PASSWORD)
    yield server
    server.stop()


def state_settings(etcd: EtcdServer, password: str | None = PASSWORD, **more: Any) -> StateSettings:
    login = {"etcd_username": "root", "etcd_password": password} if password else {}
    return StateSettings(backend="etcd", etcd_endpoints=[etcd.url], **login, **more)


def as_root(etcd: EtcdServer, *args: str) -> str:
    return etcd.etcdctl("v3", *args, user=f"root:{PASSWORD}").stdout


class TestEtcdStoreWithAuth(StoreContract):
    @pytest.fixture
    def store(self, etcd: EtcdServer, request: pytest.FixtureRequest) -> Iterator[EtcdRefreshStore]:
        store = EtcdRefreshStore(
            open_state_client(state_settings(etcd)), f"/a/{request.node.name}/"
        )
        yield store
        store.close()


class TestEtcdFailureStoreWithAuth(FailureStoreContract):
    @pytest.fixture
    def failure_store(
        self, etcd: EtcdServer, request: pytest.FixtureRequest
    ) -> Iterator[EtcdFailureStore]:
        client = open_state_client(state_settings(etcd))
        store = EtcdFailureStore(client, f"/f/{request.node.name}/")
        yield store
        store.close()


def bare_token(etcd: EtcdServer) -> str:
    login = {"name": "root", "password": PASSWORD}
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        return str(client.post(f"{etcd.url}/v3/auth/authenticate", json=login).json()["token"])


def token_works(etcd: EtcdServer, token: str) -> bool:
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        answer = client.post(
            f"{etcd.url}/v3/kv/range", json={"key": "eA=="}, headers={"Authorization": token}
        )
    return answer.status_code == 200


def test_the_store_logs_in_again_once_etcd_forgot_its_token(etcd: EtcdServer) -> None:
    store = EtcdRefreshStore(open_state_client(state_settings(etcd)), "/a/expiry/")
    _, record = RefreshTokens(store, RefreshPolicy(100, 50)).issue("alice", "s", "c", "v", 0)
    token = bare_token(etcd)
    assert token_works(etcd, token)
    time.sleep(TOKEN_TTL + 1.5)
    assert not token_works(etcd, token)  # etcd did forget idle tokens, the store's one too
    assert store.find(record.token_hash) == record
    assert record.token_hash in as_root(etcd, "get", "--prefix", "/a/expiry/")
    unauthenticated = etcd.etcdctl("v3", "get", "--prefix", "/a/expiry/", check=False)
    assert unauthenticated.returncode != 0  # auth really is on
    store.close()


def test_the_publishers_watch_logs_in_again_too(etcd: EtcdServer) -> None:
    login = {"username": "root", "password": PASSWORD}
    settings = EtcdSettings(endpoints=[etcd.url], api="v3", key="/a/published", **login)
    backend = GatewayBackend(settings)
    revision = backend.create('{"realm":"r"}')
    time.sleep(TOKEN_TTL + 1.5)
    assert backend.wait_for_change(revision - 1, 5.0) is True  # the create is that change
    assert backend.read().value == '{"realm":"r"}'
    backend.close()


@pytest.mark.parametrize(
    ("password", "words"),
    [
        (WRONG, "etcd refused the request: etcdserver: authentication failed"),
        (None, "etcd refused the request: etcdserver: user name is empty"),
    ],
)
def test_wrong_or_missing_credentials_are_a_state_store_error(
    etcd: EtcdServer, password: str | None, words: str
) -> None:
    store = EtcdRefreshStore(open_state_client(state_settings(etcd, password)), "/a/x/")
    with pytest.raises(StateStoreError) as caught:
        store.records()
    message = str(caught.value)
    assert message.startswith(f"etcd v3 at {etcd.url}: "), message
    assert words in message
    assert WRONG not in message
    store.close()


# --- the service itself, a real process -------------------------------------------------------


def service_state(etcd: EtcdServer, password: str) -> dict[str, Any]:
    return {
        "backend": "etcd",
        "etcd_endpoints": [etcd.url],
        "etcd_prefix": "/a/service/",
        "etcd_username": "root",
        "etcd_password": password,
    }


def add_store_user(etcd: EtcdServer, name: str, password: str, *prefixes: str) -> None:
    """A least-privilege etcd user: read and write under `prefixes`, nothing else."""
    as_root(etcd, "user", "add", f"{name}:{password}")
    as_root(etcd, "role", "add", name)
    for prefix in prefixes:
        as_root(etcd, "role", "grant-permission", name, "--prefix=true", "readwrite", prefix)
    as_root(etcd, "user", "grant-role", name, name)


def test_the_service_keeps_its_state_as_a_least_privilege_etcd_user(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    user_password = "store-Password-2"
    add_store_user(etcd, "registry-auth", user_password, "/a/service/", "/a/counters/")
    state = {**service_state(etcd, user_password), "etcd_username": "registry-auth"}
    extra = {"state": state, "brute_force": {"etcd_prefix": "/a/counters/"}}
    auth = start_auth_server(tmp_path, users=USERS, extra_settings=extra)
    try:
        token = refresh_token_for(auth)
        assert refresh_grant(auth, token).status_code == 200
        assert password_grant(auth, "alice", "not-her-password").status_code == 401
        listing = as_root(etcd, "get", "--prefix", "--keys-only", "/a/")
        service = [key for key in listing.split() if key.startswith("/a/service/")]
        assert len(service) == 2  # the record and its account's index entry
        assert sum(key.startswith("/a/service/~a/") for key in service) == 1
        assert sum(key.startswith("/a/counters/") for key in listing.split()) == 2  # pair, IP
    finally:
        auth.stop()
    log = auth.log()
    assert user_password not in log
    assert "counters unavailable" not in log  # the counters were written, not skipped


def test_a_role_without_the_counters_prefix_leaves_the_refresh_tokens_working(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    """etcd refusing one call (a prefix the role lacks, a full database) was taken for an
    outage of all of it: the refresh grants' reads failed too (503), and the log said the
    store was unavailable, then back, by turns."""
    user_password = "store-Password-3"
    add_store_user(etcd, "tokens-only", user_password, "/a/partial/")  # no counters' prefix
    state = {
        **service_state(etcd, user_password),
        "etcd_username": "tokens-only",
        "etcd_prefix": "/a/partial/",
    }
    extra = {"state": state, "brute_force": {"etcd_prefix": "/a/partial-counters/"}}
    auth = start_auth_server(tmp_path, users=USERS, extra_settings=extra)
    try:
        token = refresh_token_for(auth)  # a login: its counters refused, its token written
        for _ in range(5):
            assert password_grant(auth, "alice", "not-her-password").status_code == 401
            assert refresh_grant(auth, token).status_code == 200
    finally:
        auth.stop()
    log = auth.log()
    assert "permission denied" in log  # said, for the counters
    assert "state store (etcd v3 at" not in log  # not an outage of the store


def test_a_wrong_etcd_password_is_503_at_the_api_and_named_in_the_log(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    """A refresh grant cannot be answered without the store: 503. A login asking for a
    refresh token (`docker login`) goes on without one, as with a server that keeps none: the
    client keeps its password."""
    audit = tmp_path / "audit.jsonl"
    extra = {"state": service_state(etcd, WRONG), "audit_log": str(audit)}
    auth = start_auth_server(tmp_path, users=USERS, extra_settings=extra)
    try:
        answer = refresh_grant(auth, "some-refresh-token")
        assert answer.status_code == 503, answer.text
        # The audit line calls it what it is, an outage, not an internal error.
        line = json.loads(audit.read_text().splitlines()[-1])
        assert (line["outcome"], line["reason"]) == (
            "unavailable",
            "temporarily_unavailable: the refresh-token store is unavailable",
        )
        body = answer.json()
        assert body["error"] == "temporarily_unavailable"
        assert body["error_description"] == "refresh-token store unavailable"
        assert answer.headers["Retry-After"] == "5"
        login = password_grant(auth, "alice", USERS["alice"])
        assert login.status_code == 200, login.text
        assert "refresh_token" not in login.json()
        docker_login = auth.token([], auth=("alice", USERS["alice"]), offline=True)
        assert docker_login.status_code == 200, docker_login.text
        assert "refresh_token" not in docker_login.json()
        # Without a refresh token asked for, tokens go on (the login counters fail open).
        assert auth.token(["repository:team/app:pull"], auth=("alice", USERS["alice"])).is_success
        with httpx.Client(trust_env=False) as client:
            scraped = client.get(f"http://127.0.0.1:{auth.port}/metrics").text
        assert "registry_auth_refresh_tokens_not_issued_total 2.0" in scraped
    finally:
        auth.stop()
    log = auth.log()
    assert "refresh-token store unavailable: etcd v3 at" in log
    assert "refresh-token store unavailable, 'alice' logged in without a refresh token" in log
    assert "authentication failed, invalid user ID or password" in log
    assert WRONG not in log


# --- in-process: the stores' HTTP clients are closed when the app shuts down -------------------


@pytest.mark.anyio
async def test_both_etcd_stores_are_closed_at_shutdown(
    etcd: EtcdServer, rsa_keys_dir: Path, tmp_path: Path
) -> None:
    htpasswd = tmp_path / "users.htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n", encoding="utf-8")
    overrides = {
        "keys_dir": str(rsa_keys_dir),
        "htpasswd": str(htpasswd),
        "issuer": "i",
        "service": "registry.test",
        "realm": "http://auth.test/token",
        "state": {**service_state(etcd, PASSWORD), "etcd_prefix": "/a/closing/"},
    }
    settings = load_settings(overrides=overrides)
    service = TokenService.from_settings(settings)
    form = {"grant_type": "password", "service": "registry.test", "client_id": "t"}
    form["access_type"] = "offline"  # ask for a refresh token
    async with api_client(create_app(settings, service)) as client:
        good = await client.post("/token", data={**form, "username": "alice", "password": "s3cret"})
        assert good.status_code == 200, good.text
        assert "refresh_token" in good.json()  # written through the etcd refresh store
        bad = await client.post("/token", data={**form, "username": "alice", "password": "nope"})
        assert bad.status_code == 401  # counted through the etcd failure store
    assert service.refresh_tokens is not None
    assert service.throttle is not None
    with pytest.raises(StateStoreError, match="the etcd client is closed"):
        service.refresh_tokens.store.records()
    with pytest.raises(StateStoreError, match="the etcd client is closed"):
        service.throttle.store.failures(["k"], 0.0, 60)
