"""Brute-force protection over HTTP: the attacker's address slows and then gets 429; the real
user, from their own address, never waits; anonymous requests are never slowed."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.state.attempts import FailureCount, FailureStore
from tests.unit.hardening.env import BRUTE_FORCE, Env, hardened_env

pytestmark = pytest.mark.anyio
ATTACKER, USER = "203.0.113.66", "198.51.100.7"


@pytest.fixture
async def env(tmp_path: Path, rsa_keys_dir: Path) -> AsyncIterator[Env]:
    async with hardened_env(tmp_path, rsa_keys_dir) as env:
        yield env


async def test_the_attacker_is_slowed_then_blocked_while_the_user_logs_in(env: Env) -> None:
    statuses = []
    for _ in range(6):
        statuses.append((await env.login("ci", "guess", ATTACKER)).status_code)
        user = await env.login("ci", "ci-pw", USER)
        assert user.status_code == 200, user.text
    assert statuses == [401, 401, 401, 401, 429, 429]
    # Free failures, then 0.5 s doubling; the user's own logins never slept.
    assert env.sleeps == [0.5, 1.0]
    blocked = await env.login("ci", "ci-pw", ATTACKER)  # even the right password: not checked
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "60"
    assert blocked.json()["error"] == "too_many_attempts"
    assert blocked.json()["details"].startswith(
        "too many failed logins for this account from this address; try again in "
    )


async def test_the_block_lifts_after_the_window(env: Env) -> None:
    for _ in range(4):
        await env.login("ci", "guess", ATTACKER)
    assert (await env.login("ci", "ci-pw", ATTACKER)).status_code == 429
    env.clock[0] += 59
    response = await env.login("ci", "ci-pw", ATTACKER)
    assert response.headers["Retry-After"] == "1"
    env.clock[0] += 2
    assert (await env.login("ci", "ci-pw", ATTACKER)).status_code == 200


async def test_a_success_resets_the_account_counter(env: Env) -> None:
    for _ in range(3):
        await env.login("alice", "typo", USER)
    assert (await env.login("alice", "alice-pw", USER)).status_code == 200
    env.sleeps.clear()
    for _ in range(2):
        assert (await env.login("alice", "typo", USER)).status_code == 401
    assert env.sleeps == []  # counting started again from zero


async def test_many_accounts_from_one_address_hit_the_per_ip_limit(env: Env) -> None:
    accounts = ["alice", "bob", "ci", "dave", "erin", "frank", "grace", "heidi"]
    for account in accounts:
        assert (await env.login(account, "guess", ATTACKER)).status_code == 401
    blocked = await env.login("mallory", "x", ATTACKER)
    assert blocked.status_code == 429
    assert blocked.json()["details"].startswith("too many failed logins from this address; ")
    assert (await env.login("bob", "bob-pw", USER)).status_code == 200


async def test_a_shared_address_is_counted_per_account_only(
    tmp_path: Path, rsa_keys_dir: Path
) -> None:
    """Behind a NAT'd CI farm, many accounts failing from one address block none of the
    others; each account is still slowed and blocked on its own."""
    farm = "198.51.100.200"
    shared = {**BRUTE_FORCE, "shared_networks": ["198.51.100.128/25", "2001:db8::/32"]}
    async with hardened_env(tmp_path, rsa_keys_dir, brute_force=shared) as env:
        for n in range(12):  # more than ip_block (8) failures from the farm's address
            assert (await env.login(f"job{n}", "stale-secret", farm)).status_code == 401
        assert (await env.login("bob", "bob-pw", farm)).status_code == 200
        statuses = [(await env.login("ci", "guess", farm)).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 401, 429]  # the pair's own limits still hold
        # An address outside the shared networks is still counted as one.
        for n in range(8):
            await env.login(f"job{n}", "stale-secret", ATTACKER)
        assert (await env.login("bob", "bob-pw", ATTACKER)).status_code == 429


async def test_anonymous_requests_from_a_blocked_address_are_not_slowed(env: Env) -> None:
    for _ in range(8):
        await env.login(f"user{_}", "guess", ATTACKER)
    env.sleeps.clear()
    response = await env.client.get(
        "/token",
        params={"service": "registry.test", "scope": "repository:public/app:pull"},
        headers={"X-Forwarded-For": ATTACKER},
    )
    assert response.status_code == 200
    assert env.sleeps == []


async def test_the_oauth_password_grant_is_counted_too(env: Env) -> None:
    form = {
        "grant_type": "password",
        "username": "ci",
        "password": "guess",
        "service": "registry.test",
        "client_id": "t",
    }
    codes = []
    for _ in range(5):
        response = await env.client.post("/token", data=form, headers={"X-Forwarded-For": ATTACKER})
        codes.append(response.status_code)
    assert codes == [401, 401, 401, 401, 429]
    assert response.headers["Retry-After"] == "60"
    assert response.json()["error"] == "slow_down"


async def test_throttles_show_in_the_audit_log_and_metrics(env: Env) -> None:
    for _ in range(5):
        await env.login("ci", "guess", ATTACKER)
    outcomes = [line["outcome"] for line in env.audit()]
    assert outcomes == ["unauthorized"] * 4 + ["throttled"]
    metrics = (await env.client.get("/metrics")).text
    assert 'registry_auth_bruteforce_throttles_total{action="blocked"}' in metrics
    assert 'registry_auth_requests_total{endpoint="token",outcome="throttled"}' in metrics


class WhereRead:
    """The service's store, recording on which thread each read runs; `at_once` False plays a
    store whose counters must come over the network (etcd, nothing read moments ago)."""

    def __init__(self, inner: FailureStore, *, at_once: bool) -> None:
        self.inner, self.at_once = inner, at_once
        self.reads: list[tuple[str, int]] = []

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        self.reads.append(("failures", threading.get_ident()))
        return self.inner.failures(keys, now, window)

    def failures_now(
        self, keys: list[str], now: float, window: int
    ) -> dict[str, FailureCount] | None:
        self.reads.append(("failures_now", threading.get_ident()))
        return self.inner.failures_now(keys, now, window) if self.at_once else None

    def add_failure(self, keys: list[str], now: float, window: int) -> None:
        self.inner.add_failure(keys, now, window)

    def reset(self, key: str) -> None:
        self.inner.reset(key)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("at_once", [True, False], ids=["answered-at-once", "over-the-network"])
async def test_counters_are_read_on_the_event_loop_unless_they_must_be_fetched(
    env: Env, at_once: bool
) -> None:
    throttle = env.service.throttle
    assert throttle is not None
    store = WhereRead(throttle.store, at_once=at_once)
    throttle.store = store
    for _ in range(4):
        await env.login("ci", "guess", ATTACKER)
    store.reads.clear()
    loop_thread = threading.get_ident()  # the test's event loop is the app's

    assert (await env.login("alice", "alice-pw", USER)).status_code == 200
    assert (await env.login("ci", "ci-pw", ATTACKER)).status_code == 429  # judged either way
    if at_once:  # no hop to a worker thread
        assert store.reads == [("failures_now", loop_thread)] * 2
    else:  # asked first, then read in a worker thread
        assert [name for name, _ in store.reads] == ["failures_now", "failures"] * 2
        assert loop_thread not in {thread for name, thread in store.reads if name == "failures"}
