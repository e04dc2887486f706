"""The credential cache in front of bcrypt (htpasswd, static users): paid once, dropped at once
when the entry changes, never caching a failure, concurrent identical checks collapsed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from pydantic import SecretStr

from app.authn.base import AuthResult, Credentials, Outcome
from app.authn.cache import CachingAuthenticator
from app.authn.htpasswd import HtpasswdAuthenticator, HtpasswdUsers
from app.authn.static import StaticAuthenticator, StaticUser, StaticUsers
from app.pools import WorkerPool

pytestmark = pytest.mark.anyio


def hashed(password: str) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))


DUMMY = hashed("dummy")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Counting:
    """Wraps a backend; counts the checks that really ran (the bcrypt checks)."""

    inner: HtpasswdAuthenticator
    calls: int = 0

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        self.calls += 1
        return await self.inner.authenticate(credentials)


class Users:
    """A hot-reloaded htpasswd file, as the Reloadable holds it: replaced whole."""

    def __init__(self, **accounts: str) -> None:
        self.set(**accounts)

    def set(self, **accounts: str) -> None:
        hashes = {name: hashed(password) for name, password in accounts.items()}
        self.current = HtpasswdUsers(Path("users.htpasswd"), hashes, DUMMY)

    def get(self) -> HtpasswdUsers:
        return self.current


def creds(account: str, password: str) -> Credentials:
    return Credentials(account, SecretStr(password))


def cached_htpasswd(users: Users, clock: Clock) -> tuple[CachingAuthenticator, Counting]:
    backend = HtpasswdAuthenticator(users.get, WorkerPool("test", 2, lower_priority=True))
    counting = Counting(backend)
    cache = CachingAuthenticator(
        counting, ttl=60, max_entries=100, clock=clock, version=backend.cache_version
    )
    return cache, counting


async def test_a_verified_password_is_checked_once_per_ttl() -> None:
    clock = Clock()
    cache, counting = cached_htpasswd(Users(alice="old-pw"), clock)
    for _ in range(5):
        assert (await cache.authenticate(creds("alice", "old-pw"))).accepted
    assert counting.calls == 1
    clock.now += 61
    assert (await cache.authenticate(creds("alice", "old-pw"))).accepted
    assert counting.calls == 2


async def test_a_changed_password_is_refused_at_once() -> None:
    clock = Clock()
    users = Users(alice="old-pw")
    cache, _ = cached_htpasswd(users, clock)
    assert (await cache.authenticate(creds("alice", "old-pw"))).accepted
    users.set(alice="new-pw")  # the file changed; the clock did not move
    assert (await cache.authenticate(creds("alice", "old-pw"))).outcome is Outcome.REJECTED
    assert (await cache.authenticate(creds("alice", "new-pw"))).accepted


async def test_a_removed_user_is_refused_at_once() -> None:
    clock = Clock()
    users = Users(alice="pw", bob="pw")
    cache, _ = cached_htpasswd(users, clock)
    assert (await cache.authenticate(creds("alice", "pw"))).accepted
    users.set(bob="pw")
    assert (await cache.authenticate(creds("alice", "pw"))).outcome is Outcome.NOT_MINE


async def test_failed_checks_are_never_cached() -> None:
    clock = Clock()
    cache, counting = cached_htpasswd(Users(alice="pw"), clock)
    for _ in range(3):
        assert (await cache.authenticate(creds("alice", "wrong"))).outcome is Outcome.REJECTED
        assert (await cache.authenticate(creds("nobody", "pw"))).outcome is Outcome.NOT_MINE
    assert counting.calls == 6
    assert len(cache) == 0
    assert (await cache.authenticate(creds("alice", "pw"))).accepted  # a failure left no mark


async def test_concurrent_identical_checks_run_once() -> None:
    clock = Clock()
    cache, counting = cached_htpasswd(Users(alice="pw"), clock)
    results = await asyncio.gather(*(cache.authenticate(creds("alice", "pw")) for _ in range(20)))
    assert all(result.accepted for result in results)
    assert counting.calls == 1


async def test_concurrent_identical_wrong_passwords_run_once_and_all_fail() -> None:
    clock = Clock()
    cache, counting = cached_htpasswd(Users(alice="pw"), clock)
    results = await asyncio.gather(*(cache.authenticate(creds("alice", "bad")) for _ in range(8)))
    assert {result.outcome for result in results} == {Outcome.REJECTED}
    assert counting.calls == 1
    await cache.authenticate(creds("alice", "bad"))
    assert counting.calls == 2  # the collapsed failure was not cached afterwards


async def test_one_waiter_giving_up_does_not_cancel_the_check_for_the_others() -> None:
    gate = asyncio.Event()

    class Slow:
        calls = 0

        async def authenticate(self, credentials: Credentials) -> AuthResult:
            Slow.calls += 1
            await gate.wait()
            return AuthResult(Outcome.ACCEPTED, credentials.account)

    cache = CachingAuthenticator(Slow(), ttl=60, max_entries=10, clock=Clock())
    first = asyncio.ensure_future(cache.authenticate(creds("ann", "pw")))
    second = asyncio.ensure_future(cache.authenticate(creds("ann", "pw")))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert (await second).accepted
    assert Slow.calls == 1


async def test_a_password_changed_during_the_check_is_not_cached() -> None:
    clock = Clock()
    users = Users(alice="pw")
    backend = HtpasswdAuthenticator(users.get)

    class ReloadMidway:
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            result = await backend.authenticate(credentials)
            users.set(alice="pw")  # same password, new salt: a new entry
            return result

    cache = CachingAuthenticator(
        ReloadMidway(), ttl=60, max_entries=10, clock=clock, version=backend.cache_version
    )
    assert (await cache.authenticate(creds("alice", "pw"))).accepted
    assert len(cache) == 0


async def test_static_users_group_change_misses_the_cache() -> None:
    user = StaticUser(hashed("pw"), frozenset({"dev"}))
    holder = {"now": StaticUsers(Path("u.yaml"), {"ann": user}, DUMMY)}
    backend = StaticAuthenticator(lambda: holder["now"])
    cache = CachingAuthenticator(
        backend, ttl=60, max_entries=10, clock=Clock(), version=backend.cache_version
    )
    assert (await cache.authenticate(creds("ann", "pw"))).groups == {"dev"}
    regrouped = StaticUser(user.hashed, frozenset({"ops"}))
    holder["now"] = StaticUsers(Path("u.yaml"), {"ann": regrouped}, DUMMY)
    assert (await cache.authenticate(creds("ann", "pw"))).groups == {"ops"}


async def test_the_cache_still_answers_account_lookups_for_refresh_grants() -> None:
    users = Users(alice="pw")
    backend = HtpasswdAuthenticator(users.get)
    cache = CachingAuthenticator(backend, ttl=60, max_entries=10, version=backend.cache_version)
    state = await cache.account_state("alice")
    assert state is not None
    assert state.credential_version == (await backend.account_state("alice")).credential_version  # type: ignore[union-attr]
    assert await cache.account_state("nobody") is None
