"""The backend chain and the result cache: order, routing, outages, what is cached (no network)."""

from __future__ import annotations

import hmac
import re
from dataclasses import replace

import pytest
from pydantic import SecretStr

from app.authn.base import AccountState, AuthResult, Credentials, Outcome
from app.authn.cache import CachingAuthenticator
from app.authn.chain import BackendChain, ChainLink
from app.errors import BackendUnavailableError

pytestmark = pytest.mark.anyio


class Scripted:
    """A backend answering from a table; counts calls."""

    def __init__(
        self, answers: dict[str, Outcome | Exception], groups: frozenset[str] = frozenset()
    ):
        self.answers = answers
        self.groups = groups
        self.calls = 0

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        self.calls += 1
        answer = self.answers.get(credentials.account, Outcome.NOT_MINE)
        if isinstance(answer, Exception):
            raise answer
        groups = self.groups if answer is Outcome.ACCEPTED else frozenset()
        return AuthResult(answer, None, groups)


def creds(account: str, password: str = "pw", **context: str) -> Credentials:  # noqa: S107
    return Credentials(account, SecretStr(password), **context)


async def test_first_decisive_answer_wins() -> None:
    first = Scripted({"ann": Outcome.REJECTED})
    second = Scripted({"ann": Outcome.ACCEPTED, "bea": Outcome.ACCEPTED}, frozenset({"g"}))
    chain = BackendChain([ChainLink("one", first), ChainLink("two", second)])
    assert (await chain.authenticate(creds("ann"))).outcome is Outcome.REJECTED
    assert second.calls == 0
    bea = await chain.authenticate(creds("bea"))
    assert (bea.outcome, bea.account, bea.groups) == (Outcome.ACCEPTED, "bea", {"g"})


async def test_nothing_decisive_is_not_accepted_and_says_no_backend_knows_the_account() -> None:
    # Not accepted either way; NOT_MINE lets the audit log tell an unknown account from a
    # wrong password.
    chain = BackendChain([ChainLink("one", Scripted({})), ChainLink("two", Scripted({}))])
    assert (await chain.authenticate(creds("zed"))).outcome is Outcome.NOT_MINE
    assert (await BackendChain([]).authenticate(creds("zed"))).outcome is Outcome.NOT_MINE


async def test_an_outage_stops_the_chain_instead_of_asking_the_next() -> None:
    down = Scripted({"ann": BackendUnavailableError("ldap", "timeout")})
    lenient = Scripted({"ann": Outcome.ACCEPTED})
    chain = BackendChain([ChainLink("ldap", down), ChainLink("files", lenient)])
    with pytest.raises(BackendUnavailableError):
        await chain.authenticate(creds("ann"))
    assert lenient.calls == 0


async def test_a_backend_bug_is_an_outage_not_an_accept_or_a_500() -> None:
    chain = BackendChain([ChainLink("buggy", Scripted({"ann": KeyError("password=hunter2")}))])
    with pytest.raises(BackendUnavailableError) as caught:
        await chain.authenticate(creds("ann"))
    assert "hunter2" not in str(caught.value)
    assert caught.value.status == 503


class Local(Scripted):
    """A backend that can look its accounts up without a password, as htpasswd can."""

    async def account_state(self, account: str) -> AccountState | None:
        return AccountState("v1", frozenset()) if account in self.answers else None


class Folding(Scripted):
    """A backend that takes any case of a name and answers with its own spelling (LDAP)."""

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        result = await super().authenticate(
            credentials._replace(account=credentials.account.lower())
        )
        return replace(result, account=credentials.account.lower()) if result.accepted else result


async def test_a_name_an_earlier_backend_holds_cannot_be_reached_by_another_spelling() -> None:
    """htpasswd holds a local `carol` (a break-glass admin) and compares names exactly; the
    directory behind it also has a carol, and took `CAROL` with her directory password as
    `carol`: a token for the local admin's account."""
    local = Local({"carol": Outcome.REJECTED})
    directory = Folding({"carol": Outcome.ACCEPTED, "dave": Outcome.ACCEPTED})
    chain = BackendChain([ChainLink("admins", local), ChainLink("corp", directory)])
    assert (await chain.authenticate(creds("carol"))).outcome is Outcome.REJECTED
    assert (await chain.authenticate(creds("CAROL"))).outcome is Outcome.SHADOWED
    assert directory.calls == 1  # it did accept: the chain refused its answer
    dave = await chain.authenticate(creds("DAVE"))  # nobody before it holds dave
    assert (dave.outcome, dave.account) == (Outcome.ACCEPTED, "dave")


async def test_accounts_pattern_routes_and_robot_names_reach_only_the_robot_store() -> None:
    users = Scripted({"robot$ci": Outcome.ACCEPTED, "sso-ann": Outcome.ACCEPTED})
    sso = Scripted({"sso-ann": Outcome.ACCEPTED})
    robots = Scripted({"robot$ci": Outcome.REJECTED})
    chain = BackendChain(
        [
            ChainLink("users", users, re.compile("[a-z]+")),
            ChainLink("sso", sso, re.compile("sso-.+")),
            ChainLink("robots", robots, robots=True),
        ]
    )
    assert (await chain.authenticate(creds("robot$ci"))).outcome is Outcome.REJECTED
    assert (await chain.authenticate(creds("sso-ann"))).accepted
    assert users.calls == 0  # neither name matched its pattern; robot names never reach it
    assert robots.calls == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_cache_reuses_accepts_until_ttl_and_never_caches_failures() -> None:
    clock = FakeClock()
    inner = Scripted({"ann": Outcome.ACCEPTED, "bob": Outcome.REJECTED}, frozenset({"g"}))
    cache = CachingAuthenticator(inner, ttl=60, max_entries=10, clock=clock, key=b"k" * 32)
    for _ in range(3):
        assert (await cache.authenticate(creds("ann"))).groups == {"g"}
    assert inner.calls == 1
    for _ in range(2):
        assert (await cache.authenticate(creds("bob"))).outcome is Outcome.REJECTED
    assert inner.calls == 3
    assert (await cache.authenticate(creds("ann", "other"))).accepted  # another password: asked
    assert inner.calls == 4
    clock.now = 60
    await cache.authenticate(creds("ann"))
    assert inner.calls == 5  # expired entry: asked again


async def test_cache_forgets_a_password_the_backend_stopped_accepting_after_ttl() -> None:
    clock = FakeClock()
    inner = Scripted({"ann": Outcome.ACCEPTED})
    cache = CachingAuthenticator(inner, ttl=30, max_entries=10, clock=clock)
    await cache.authenticate(creds("ann"))
    inner.answers["ann"] = Outcome.REJECTED
    clock.now = 31
    assert (await cache.authenticate(creds("ann"))).outcome is Outcome.REJECTED


async def test_cache_is_bounded_and_holds_no_password() -> None:
    inner = Scripted({f"u{i}": Outcome.ACCEPTED for i in range(10)})
    cache = CachingAuthenticator(inner, ttl=60, max_entries=3, clock=FakeClock())
    for i in range(10):
        await cache.authenticate(creds(f"u{i}", "sekrit-pw"))
    assert len(cache) == 3
    assert b"sekrit-pw" not in b"".join(cache._entries)  # keys are HMACs


async def test_cache_keys_are_hmac_sha256_of_the_credentials_under_the_process_key() -> None:
    """Each key is computed from a copy of the keyed HMAC state: one digest leaves nothing
    behind for the next (the same credentials give the same key after others)."""
    inner = Scripted({"ann": Outcome.ACCEPTED, "bob": Outcome.ACCEPTED})
    key = b"k" * 32
    cache = CachingAuthenticator(inner, ttl=60, max_entries=10, clock=FakeClock(), key=key)
    for account, password in [("ann", "pw-1"), ("bob", "pw-2"), ("ann", "pw-1")]:
        await cache.authenticate(creds(account, password))
    fields = [[b"ann", b"pw-1", b""], [b"bob", b"pw-2", b""]]  # account, password, version
    expected = [
        hmac.digest(key, b"".join(len(f).to_bytes(8, "big") + f for f in parts), "sha256")
        for parts in fields
    ]
    assert sorted(cache._entries) == sorted(expected)
    assert inner.calls == 2


async def test_per_client_cache_keys_include_service_and_address() -> None:
    inner = Scripted({"ann": Outcome.ACCEPTED})
    cache = CachingAuthenticator(inner, ttl=60, max_entries=10, clock=FakeClock(), per_client=True)
    await cache.authenticate(creds("ann", client_ip="10.0.0.1"))
    await cache.authenticate(creds("ann", client_ip="10.0.0.2"))
    assert inner.calls == 2


def test_throttle_name_folds_only_names_a_folding_backend_answers_for() -> None:
    """The brute-force counters count `CAROL` and ` carol` as carol when the LDAP link answers
    for them; a name only an as-typed backend (htpasswd) answers for stays as typed."""
    folding = ChainLink("ldap", Scripted({}), re.compile(r"[^-]*"), name_key=str.casefold)
    as_typed = ChainLink("htpasswd", Scripted({}), re.compile(r"ci-.*"))
    chain = BackendChain([as_typed, folding])
    assert chain.throttle_name("CAROL") == "carol"
    assert chain.throttle_name("CI-Bot") == "CI-Bot"  # neither: the ldap link skips dashes
    assert chain.throttle_name("ci-Bot") == "ci-Bot"  # the htpasswd link alone
    assert BackendChain([as_typed]).throttle_name("Ci-X") == "Ci-X"
    robots = BackendChain([ChainLink("robots", Scripted({}), robots=True), folding])
    assert robots.throttle_name("robot$CI") == "robot$CI"  # the ldap link never sees robots
