"""Refresh tokens with the real programs: skopeo logged in with an identity token against
docker-registry 2.8, revocation and password changes seen by skopeo, and two service
processes sharing one real etcd 3.4."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.etcd.gateway import Connection, GatewayClient
from app.etcd.kv import prefix_end
from app.etcd.refresh_store import EtcdRefreshStore
from app.state.model import RefreshRecord
from tests.integration.support.authserver import (
    AuthServer,
    add_user,
    app_command,
    start_auth_server,
)
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.support.oci import OciImage, manifest_digest
from tests.integration.support.procs import run_checked
from tests.integration.support.skopeo import Skopeo, SkopeoResult
from tests.integration.support.stack import USERS, Stack
from tests.unit.test_state_sqlite import StoreContract

# containers/image sends this client_id on its OAuth2 POST (docker_client.go).
CLIENT_ID = "containers/image"
DENIED_WORDS = ("unauthorized", "authentication required", "invalid_grant", "denied")
MakeImage = Callable[..., OciImage]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


class TestEtcdStore(StoreContract):
    """The store contract on the real etcd, through the v3 JSON gateway."""

    @pytest.fixture
    def store(self, etcd: EtcdServer, request: pytest.FixtureRequest) -> Iterator[EtcdRefreshStore]:
        prefix = f"/test/{request.node.name}/"
        store = EtcdRefreshStore(GatewayClient(Connection([etcd.url], 5.0)), prefix)
        yield store
        store.close()


def test_records_in_etcd_hold_the_hash_not_the_token(etcd: EtcdServer) -> None:
    store = EtcdRefreshStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/raw/")
    from app.state.refresh import RefreshPolicy, RefreshTokens  # noqa: PLC0415 - local to this test

    token, record = RefreshTokens(store, RefreshPolicy(100, 50)).issue("alice", "s", "c", "v", 0)
    listing = etcd.etcdctl("v3", "get", "--prefix", "/test/raw/").stdout
    assert record.token_hash in listing
    assert token not in listing
    store.close()


def test_a_login_counts_its_accounts_tokens_without_reading_everyones(etcd: EtcdServer) -> None:
    """Each login asking for a refresh token trims its account's to the cap: it read every
    record of every account (2-2.5 s per `docker login` with 50,000 records)."""
    from app.state.refresh import RefreshPolicy, RefreshTokens  # noqa: PLC0415 - local to this test

    client = GatewayClient(Connection([etcd.url], 5.0))
    store = EtcdRefreshStore(client, "/test/index/")
    tokens = RefreshTokens(store, RefreshPolicy(10_000, 5_000, per_account=3))
    for n in range(300):
        tokens.issue(f"ci{n % 30}", "s", "c", "v", n)
    read: list[int] = []
    ranged, txn = client.range, client.txn

    def counting_range(key: bytes, range_end: bytes | None = None) -> Any:
        answer = ranged(key, range_end)
        read.append(len(answer.kvs))
        return answer

    def counting_txn(compare: list[Any], success: list[Any]) -> Any:
        answer = txn(compare, success)
        read.extend(len(r.get("response_range", {}).get("kvs") or []) for r in answer.responses)
        return answer

    client.range, client.txn = counting_range, counting_txn  # type: ignore[method-assign]
    tokens.issue("alice", "s", "c", "v", 400)
    assert sum(read) <= 2  # alice's index entry and her record: not the 90 others'
    for n in range(5):
        tokens.issue("alice", "s", "c", "v", 401 + n)
    assert len(store.account_records("alice")) == 3  # the cap holds
    assert len(store.records()) == 30 * 3 + 3
    # A record from before the index (no index entry) is listed, revoked and purged as ever.
    legacy = RefreshRecord("old", "f" * 64, "alice", "s", "c", "v", 0, 10**10, 0)
    client.put(b"/test/index/" + b"f" * 64, legacy.to_json().encode())
    assert legacy in store.records("alice")
    assert store.delete([legacy.token_hash]) == 1
    # Every index entry left belongs to a record (a delete removes both).
    index = etcd.etcdctl("v3", "get", "--prefix", "--keys-only", "/test/index/~a/").stdout.split()
    assert sorted(key.rsplit("/", 1)[1] for key in index) == sorted(
        r.token_hash for r in store.records()
    )
    # A version before the index, still running during a rolling upgrade, reads the whole
    # prefix as records: every value there parses as the record of the token its key names.
    whole = client.range(b"/test/index/", prefix_end(b"/test/index/")).kvs
    assert len(whole) == 2 * len(store.records())
    assert all(
        kv.key.decode().endswith(RefreshRecord.from_json(kv.value).token_hash) for kv in whole
    )
    store.close()


def test_a_value_that_is_not_a_record_is_skipped_and_said(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A login counter under the records' prefix (the two prefixes overlapped, which the
    settings now refuse) made every login asking for a refresh token a 500, and `tokens list`
    and `tokens revoke` a traceback: the operator could not revoke a stolen token."""
    client = GatewayClient(Connection([etcd.url], 5.0))
    store = EtcdRefreshStore(client, "/test/foreign/")
    kept = RefreshRecord("id1", "a" * 64, "alice", "s", "c", "v", 0, 10**10, 0)
    store.add(kept)
    client.put(b"/test/foreign/failures/n/" + b"b" * 64, b'{"count":3,"last_at":7}')
    client.put(b"/test/foreign/" + b"c" * 64, b"not json")
    with caplog.at_level("WARNING", logger="app.etcd.refresh_store"):
        assert store.records() == [kept]
        assert store.find("c" * 64) is None
        store.touch("c" * 64, 5)  # nothing to touch: no error, the value left alone
    said = [r.getMessage() for r in caplog.records]
    assert (
        "etcd key /test/foreign/failures/n/" + "b" * 64 + " is not a refresh-token record: skipped"
        in said
    )
    assert client.range(b"/test/foreign/" + b"c" * 64).kvs[0].value == b"not json"
    assert store.delete(["a" * 64, "c" * 64]) == 2
    assert store.records() == []
    store.close()


# --- helpers -------------------------------------------------------------------------------


def password_grant(auth: AuthServer, user: str, password: str) -> httpx.Response:
    form = {
        "grant_type": "password",
        "username": user,
        "password": password,
        "service": auth.service,
        "client_id": CLIENT_ID,
        "access_type": "offline",
    }
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        return client.post(auth.realm, data=form)


def refresh_grant(auth: AuthServer, token: str) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "service": auth.service,
        "client_id": CLIENT_ID,
        "scope": "repository:team/app:pull",
    }
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        return client.post(auth.realm, data=form)


def refresh_token_for(auth: AuthServer, user: str = "alice") -> str:
    response = password_grant(auth, user, auth.users[user])
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


def log_in_with_identity_token(skopeo: Skopeo, registry_host: str, user: str, token: str) -> None:
    """What `docker login` leaves behind: `auth` = base64("user:") plus the identity token.

    containers/image ignores an entry holding only `identitytoken` (protocol.md §8).
    """
    entry = {"auth": base64.b64encode(f"{user}:".encode()).decode(), "identitytoken": token}
    skopeo.auth_file.write_text(json.dumps({"auths": {registry_host: entry}}), encoding="utf-8")


def tokens_cli(auth: AuthServer, *args: str) -> str:
    argv = app_command("tokens", *args, "--config", str(auth.config_path))
    return run_checked(argv, what="registry-auth tokens").stdout


def push(skopeo: Skopeo, stack: Stack, image: OciImage, repository: str) -> SkopeoResult:
    dest = stack.registry.ref(repository, image.tag)
    return skopeo.run(["copy", "--dest-tls-verify=false", image.ref, dest])


def inspect(skopeo: Skopeo, stack: Stack, repository: str, tag: str) -> SkopeoResult:
    return skopeo.run(
        ["inspect", "--raw", "--tls-verify=false", stack.registry.ref(repository, tag)]
    )


def assert_refused(result: SkopeoResult) -> None:
    assert not result.ok, f"expected a refusal, skopeo succeeded:\n{result}"
    assert any(word in result.stderr.lower() for word in DENIED_WORDS), result


def wait_until_refused(attempt: Callable[[], SkopeoResult], seconds: float) -> SkopeoResult:
    deadline = time.monotonic() + seconds
    while True:
        result = attempt()
        if not result.ok or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


# --- the real client ------------------------------------------------------------------------


def refresh_grant_outcomes(log: str) -> list[str]:
    """The outcome of each refresh grant in the audit lines (stdout) of a service's log."""
    decisions = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    return [d["outcome"] for d in decisions if d["grant"] == "refresh_token"]


def test_skopeo_pushes_and_pulls_with_an_identity_token_until_it_is_revoked(
    stack_factory: Callable[..., Stack], skopeo: Skopeo, make_image: MakeImage
) -> None:
    stack = stack_factory()
    token = refresh_token_for(stack.auth)
    log_in_with_identity_token(skopeo, stack.registry.host, "alice", token)
    image = make_image("1.0")

    pushed = push(skopeo, stack, image, "team/app")
    assert pushed.ok, f"{pushed}\n{stack.logs()}"
    pulled = inspect(skopeo, stack, "team/app", "1.0")
    assert pulled.ok, pulled
    assert json.loads(pulled.stdout)["config"]["digest"].startswith("sha256:")
    # skopeo used the OAuth2 refresh grant (POST), never a password it does not have.
    assert "granted" in refresh_grant_outcomes(stack.auth.log())
    assert 'HTTP/1.1" 200' not in stack.auth.log()  # the audit line only, no access-log line
    listing = tokens_cli(stack.auth, "list", "--account", "alice")
    assert "alice" in listing
    assert CLIENT_ID in listing
    assert token not in listing

    assert "revoked 1 refresh token(s)" in tokens_cli(stack.auth, "revoke", "--account", "alice")

    assert_refused(inspect(skopeo, stack, "team/app", "1.0"))
    assert_refused(push(skopeo, stack, make_image("2.0"), "team/app"))
    assert refresh_grant_outcomes(stack.auth.log())[-1] == "unauthorized"


def docker_login(auth: AuthServer, user: str = "alice") -> str:
    """The refresh token `docker login` gets and keeps as the identity token (protocol.md §1)."""
    params = {
        "account": user,
        "client_id": "docker",
        "offline_token": "true",
        "service": auth.service,
    }
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        response = client.get(auth.realm, params=params, auth=(user, auth.users[user]))
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


def test_skopeo_uses_the_identity_token_docker_login_left(
    stack_factory: Callable[..., Stack], skopeo: Skopeo, make_image: MakeImage
) -> None:
    # skopeo and podman read ~/.docker/config.json and send client_id=containers/image with
    # the token docker got as client_id=docker: bound to "docker", it was invalid_grant.
    stack = stack_factory()
    log_in_with_identity_token(skopeo, stack.registry.host, "alice", docker_login(stack.auth))
    pushed = push(skopeo, stack, make_image("1.0"), "team/app")
    assert pushed.ok, f"{pushed}\n{stack.logs()}"
    assert inspect(skopeo, stack, "team/app", "1.0").ok
    outcomes = refresh_grant_outcomes(stack.auth.log())
    assert outcomes
    assert set(outcomes) == {"granted"}
    listing = tokens_cli(stack.auth, "list", "--account", "alice")
    assert "docker" in listing  # the client it was issued to


def test_a_password_change_logs_skopeo_out(
    stack_factory: Callable[..., Stack], skopeo: Skopeo, make_image: MakeImage, tmp_path: Path
) -> None:
    stack = stack_factory(users={"bob": "bob-Secret-2"})
    image = make_image("1.0")
    token = refresh_token_for(stack.auth, "bob")
    log_in_with_identity_token(skopeo, stack.registry.host, "bob", token)
    assert push(skopeo, stack, image, "team/bob").ok

    htpasswd = Path(stack.auth.settings["htpasswd"])
    add_user(htpasswd, "bob", "bob-New-Secret-3")  # the operator's `users add` changes it

    refused = wait_until_refused(lambda: inspect(skopeo, stack, "team/bob", "1.0"), 15)
    assert_refused(refused)
    # bob with the new password is welcome again; the old token stays dead.
    stack.auth.users["bob"] = "bob-New-Secret-3"
    log_in_with_identity_token(
        skopeo, stack.registry.host, "bob", refresh_token_for(stack.auth, "bob")
    )
    result = skopeo.run(
        [
            "copy",
            "--src-tls-verify=false",
            stack.registry.ref("team/bob", "1.0"),
            f"oci:{tmp_path / 'pulled'}:1.0",
        ]
    )
    assert result.ok, result
    assert manifest_digest(tmp_path / "pulled", "1.0") == image.manifest_digest
    assert refresh_grant(stack.auth, token).status_code == 401


@pytest.mark.parametrize("workers", [1, 2])
def test_a_revocation_reaches_the_server_after_readiness_probes(
    tmp_path: Path, workers: int
) -> None:
    """The /readyz check of the state file read its header, and closing that descriptor
    dropped the server's SQLite locks: the CLI's closing connection then deleted the -wal and
    -shm files under the server's, and a revoked refresh token went on working."""
    auth = start_auth_server(tmp_path, users=USERS, extra_settings={"workers": workers})
    try:
        token = refresh_token_for(auth)
        assert refresh_grant(auth, token).status_code == 200
        for _ in range(4):  # with two workers, each answers some
            assert httpx.get(f"{auth.url}/readyz", timeout=10).status_code == 200
        assert "revoked 1 refresh token(s)" in tokens_cli(auth, "revoke", "--all")
        answers = [refresh_grant(auth, token).status_code for _ in range(4)]
        assert answers == [401] * 4, auth.log()
    finally:
        auth.stop()


# --- several instances on one etcd -----------------------------------------------------------


def test_a_revocation_on_one_instance_holds_on_the_other_within_a_second(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    state = {"backend": "etcd", "etcd_endpoints": [etcd.url], "etcd_prefix": "/ra/shared/"}
    first = start_auth_server(tmp_path / "a", users=USERS, extra_settings={"state": state})
    try:
        shared = {"state": state, "htpasswd": first.settings["htpasswd"]}
        second = start_auth_server(tmp_path / "b", extra_settings=shared)
        second.users.update(USERS)
        try:
            token = refresh_token_for(first)
            assert refresh_grant(second, token).status_code == 200  # one store for both
            tokens_cli(first, "revoke", "--all")
            revoked_at = time.monotonic()
            answer = refresh_grant(second, token)
            while answer.status_code == 200 and time.monotonic() - revoked_at < 1.0:
                answer = refresh_grant(second, token)
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"] == "invalid_grant"
            assert refresh_grant(first, token).status_code == 401
        finally:
            second.stop()
    finally:
        first.stop()
