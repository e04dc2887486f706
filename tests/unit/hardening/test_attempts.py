"""Brute-force policy (vector table) and the SQLite counters it keeps."""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.api.lifespans import hand_back_lifespan
from app.authn.base import AuthResult, Credentials, Outcome
from app.authn.cache import CachingAuthenticator
from app.errors import (
    AuthenticationError,
    BackendUnavailableError,
    StateStoreError,
    TooManyAttemptsError,
)
from app.login import GuardedLogin
from app.settings_sections import BruteForceSettings
from app.state import sqlite
from app.state.attempts import (
    HAND_BACK_BATCH,
    NO_FAILURES,
    FailureCount,
    LoginThrottle,
    counter_keys,
    judge,
)
from app.state.memory import MemoryFailureStore
from app.state.sqlite import SqliteStore
from tests.unit.hardening.failure_contract import FailureStoreContract
from tests.vectors.load import load

VECTORS = load("bruteforce.yaml")
POLICY = BruteForceSettings(**VECTORS["policy"])
NOW = 1_000_000.0


def _counter(raw: list[float] | None) -> FailureCount | None:
    return None if raw is None else FailureCount(int(raw[0]), NOW - raw[1])


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda case: case["name"])
def test_judge(case: dict[str, Any]) -> None:
    verdict = judge(_counter(case["pair"]), _counter(case["ip"]), POLICY, NOW)
    assert verdict.delay == case["delay"]
    assert verdict.retry_after == case["retry_after"]


def test_keys_separate_accounts_and_addresses_and_hide_both() -> None:
    alice_here, ip_here = counter_keys("alice", "10.0.0.1")
    alice_there, ip_there = counter_keys("alice", "10.0.0.2")
    assert alice_here != alice_there
    assert ip_here != ip_there
    assert counter_keys("bob", "10.0.0.1")[1] == ip_here
    assert "alice" not in alice_here
    assert "10.0.0.1" not in ip_here
    # No ambiguous joins: ("a", "b:c") and ("a:b", "c") are different pairs.
    assert counter_keys("a", "b\x00c")[0] != counter_keys("a\x00b", "c")[0]


def test_sqlite_counts_resets_and_forgets_after_the_window(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    assert store.failures(["k"], NOW, 100) == {}  # no file yet: nothing, and none created
    assert not (tmp_path / "state.db").exists()
    for step in range(3):
        store.add_failure(["k", "other"], NOW + step, 100)
    assert store.failures(["k"], NOW + 2, 100) == {"k": FailureCount(3, NOW + 2)}
    store.reset("k")
    assert store.failures(["k", "other"], NOW + 2, 100) == {"other": FailureCount(3, NOW + 2)}
    assert store.failures(["other"], NOW + 103, 100) == {}  # idle past the window
    store.add_failure(["other"], NOW + 200, 100)
    assert store.failures(["other"], NOW + 200, 100) == {"other": FailureCount(1, NOW + 200)}
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600


def test_a_kept_read_connection_sees_other_writers_and_reopens_after_close(
    tmp_path: Path,
) -> None:
    # Counters are read through a connection kept open per thread; another process (here:
    # another store on the same file) writes through its own.
    reader, writer = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")
    writer.add_failure(["k"], NOW, 100)
    assert reader.failures(["k"], NOW, 100) == {"k": FailureCount(1, NOW)}
    writer.add_failure(["k"], NOW + 1, 100)
    assert reader.failures(["k"], NOW + 1, 100) == {"k": FailureCount(2, NOW + 1)}
    reader.close()
    writer.reset("k")
    assert reader.failures(["k"], NOW + 1, 100) == {}


def test_counters_read_again_only_after_the_file_changed(tmp_path: Path) -> None:
    reader, writer = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")
    writer.add_failure(["k"], NOW, 100)
    assert reader.failures(["k", "none"], NOW, 100) == {"k": FailureCount(1, NOW)}
    statements: list[str] = []
    reader._reader().db.set_trace_callback(statements.append)
    for _ in range(3):
        assert reader.failures(["k", "none"], NOW, 100) == {"k": FailureCount(1, NOW)}
    assert statements == ["PRAGMA data_version"] * 3  # nothing changed: no SELECT
    writer.reset("k")
    assert reader.failures(["k", "none"], NOW, 100) == {}
    assert len(statements) == 5  # the change was noticed and both keys read again
    # A remembered counter still ages out: the window is applied to it on every read.
    writer.add_failure(["k"], NOW + 1, 100)
    assert reader.failures(["k"], NOW + 101, 100) == {"k": FailureCount(1, NOW + 1)}
    assert reader.failures(["k"], NOW + 101.5, 100) == {}


def test_remembered_counters_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "KEPT_COUNTERS", 4)
    store = SqliteStore(tmp_path / "state.db")
    store.add_failure([f"k{n}" for n in range(10)], NOW, 100)
    for n in range(10):
        assert store.failures([f"k{n}", "none"], NOW, 100) == {f"k{n}": FailureCount(1, NOW)}
        assert len(store._reader().counters) <= 4


def _add_then_reset(path: str) -> None:
    store = SqliteStore(Path(path))
    store.add_failure(["k", "other"], NOW, 100)
    store.reset("k")


def test_remembered_counters_follow_another_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    reader = SqliteStore(path)
    reader.add_failure(["other"], NOW, 100)  # the file exists; "k" is remembered as absent
    assert reader.failures(["k", "other"], NOW, 100) == {"other": FailureCount(1, NOW)}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(_fail_in, str(path), ["k"]).result()
        assert reader.failures(["k", "other"], NOW, 100) == {
            "k": FailureCount(1, NOW),
            "other": FailureCount(1, NOW),
        }
        pool.submit(_add_then_reset, str(path)).result()
    assert reader.failures(["k", "other"], NOW, 100) == {"other": FailureCount(2, NOW)}


def _fail_in(path: str, keys: list[str]) -> None:
    SqliteStore(Path(path)).add_failure(keys, NOW, 100)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "reset", "read"]),
        st.sampled_from(["first", "second"]),  # which of two writers (connections)
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True),
        st.integers(0, 150),  # seconds after NOW
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(_STEPS)
def test_remembered_counters_answer_as_a_fresh_read_would(steps: list[Any]) -> None:
    """Both reads: `failures` at once; a login's (`failures_now`) once RECHECK_SECONDS have
    passed since another process wrote, and at once after this one wrote."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "state.db"
        clock = _Clock()
        reader = SqliteStore(path, monotonic=clock)
        writers = {"first": SqliteStore(path), "second": reader}  # its own writes count too
        for action, who, keys, offset in steps:
            now = NOW + offset
            if action == "add":
                writers[who].add_failure(keys, now, 100)
            elif action == "reset":
                writers[who].reset(keys[0])
            if who == "first":
                clock.now += sqlite.RECHECK_SECONDS
            fresh = SqliteStore(path)
            expected = fresh.failures(keys, now, 100)
            assert reader.failures_now(keys, now, 100) == expected
            assert reader.failures(keys, now, 100) == expected
            fresh.close()
        for store in (reader, writers["first"]):
            store.close()


def test_a_logins_read_asks_the_file_again_only_after_a_while(tmp_path: Path) -> None:
    """failures_now (every login, on the event loop) answers from what its connection last
    found current for RECHECK_SECONDS: asking the file each time cost ~9% of the fresh-token
    rate. Another process's failures count after that; this process's own at once."""
    clock = _Clock()
    reader = SqliteStore(tmp_path / "state.db", monotonic=clock)
    other = SqliteStore(tmp_path / "state.db")  # another worker, or `logins reset`
    other.add_failure(["k"], NOW, 100)
    assert reader.failures_now(["k", "none"], NOW, 100) == {"k": FailureCount(1, NOW)}
    statements: list[str] = []
    reader._reader().db.set_trace_callback(statements.append)

    other.add_failure(["k"], NOW + 1, 100)
    assert reader.failures_now(["k", "none"], NOW + 1, 100) == {"k": FailureCount(1, NOW)}
    assert statements == []  # trusted: not even the pragma
    clock.now += sqlite.RECHECK_SECONDS
    assert reader.failures_now(["k", "none"], NOW + 1, 100) == {"k": FailureCount(2, NOW + 1)}

    reader.add_failure(["k"], NOW + 2, 100)  # its own failure: at once
    assert reader.failures_now(["k"], NOW + 2, 100) == {"k": FailureCount(3, NOW + 2)}
    reader.reset("k")  # its own reset: at once
    assert reader.failures_now(["k"], NOW + 2, 100) == {}
    other.add_failure(["new"], NOW + 3, 100)
    assert reader.failures_now(["new"], NOW + 3, 100) == {"new": FailureCount(1, NOW + 3)}
    # Trusted counters still age out: the window is applied on every read.
    assert reader.failures_now(["new"], NOW + 103.5, 100) == {}
    reader.close()
    other.close()


def test_a_logins_read_looks_for_a_missing_file_again_only_after_a_while(
    tmp_path: Path,
) -> None:
    """A server on which no login ever failed has no state file: each login stat'ed the path.
    Another process's first failure counts within RECHECK_SECONDS, this process's own at once."""
    clock = _Clock()
    reader = SqliteStore(tmp_path / "one.db", monotonic=clock)
    assert reader.failures_now(["k"], NOW, 100) == {}
    SqliteStore(tmp_path / "one.db").add_failure(["k"], NOW, 100)  # another process
    assert reader.failures_now(["k"], NOW, 100) == {}  # not looked for again yet
    clock.now += sqlite.RECHECK_SECONDS
    assert reader.failures_now(["k"], NOW, 100) == {"k": FailureCount(1, NOW)}

    own = SqliteStore(tmp_path / "two.db", monotonic=clock)
    assert own.failures_now(["k"], NOW, 100) == {}
    own.add_failure(["k"], NOW, 100)
    assert own.failures_now(["k"], NOW, 100) == {"k": FailureCount(1, NOW)}
    for store in (reader, own):
        store.close()


def test_an_unusable_store_fails_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    throttle = LoginThrottle(SqliteStore(blocker / "state.db"), POLICY, lambda: NOW)
    for _ in range(10):
        throttle.failed("alice", "10.0.0.1")
    assert throttle.check("alice", "10.0.0.1").retry_after is None


def test_success_resets_only_the_pair(tmp_path: Path) -> None:
    clock = [NOW]
    throttle = LoginThrottle(SqliteStore(tmp_path / "s.db"), POLICY, lambda: clock[0])
    for _ in range(6):
        throttle.failed("alice", "10.0.0.9")
    throttle.failed("bob", "10.0.0.9")
    assert throttle.check("alice", "10.0.0.9").blocked
    verdict = throttle.check("bob", "10.0.0.9")
    assert verdict.pair_failures == 1
    throttle.succeeded("bob", "10.0.0.9", verdict)
    assert throttle.check("bob", "10.0.0.9").pair_failures == 0
    assert throttle.check("alice", "10.0.0.9").blocked  # bob's success did not clear the IP


class TestSqliteFailureStore(FailureStoreContract):
    @pytest.fixture
    def failure_store(self, tmp_path: Path) -> SqliteStore:
        return SqliteStore(tmp_path / "state.db")


def _fail_often(path: str, start: Any) -> None:
    store = SqliteStore(Path(path))
    start.wait()
    for _ in range(10):
        store.add_failure(["shared"], NOW, 100)


def test_processes_creating_the_file_together_lose_no_failure(tmp_path: Path) -> None:
    # Granian's workers all open the state file for the first time at about the same moment.
    path = tmp_path / "state.db"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(4, mp_context=context) as pool:
        start = manager.Barrier(4)
        list(pool.map(_fail_often, [str(path)] * 4, [start] * 4))
    assert SqliteStore(path).failures(["shared"], NOW, 100)["shared"].count == 40


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_by_its_address() -> None:
    """Counted per address, an IPv6 host could guess from every address of its /64."""
    one = counter_keys("alice", "2001:db8:1:2::1")
    assert counter_keys("alice", "2001:db8:1:2:ffff:ffff:ffff:ffff") == one
    assert counter_keys("alice", "2001:db8:1:3::1") != one
    assert counter_keys("alice", "::ffff:192.0.2.7") == counter_keys("alice", "192.0.2.7")
    assert counter_keys("alice", "::ffff:192.0.2.7") != counter_keys("alice", "::ffff:192.0.2.8")


@pytest.mark.anyio
@pytest.mark.parametrize("on_record", [True, False], ids=["after-a-failure", "first-burst"])
@pytest.mark.parametrize("delay", [0.0, 0.25], ids=["no-delay", "delayed"])
@pytest.mark.parametrize("where", ["pair", "address"])
async def test_parallel_guesses_are_checked_no_more_than_the_block_allows(
    where: str, delay: float, on_record: bool
) -> None:
    """200 parallel wrong passwords from one address were all checked before the first
    failure was counted: the block at `account_ip_block` (or `ip_block`) came 190 late. Once
    a failure was on record, they took turns; a first burst, with nothing on record yet, was
    still all checked at once."""
    # The pair's limits, or the address's, are the only ones the guesses can reach.
    ip = {"ip_free": 3, "ip_block": 8} if where == "address" else {"ip_free": 400, "ip_block": 500}
    policy = BruteForceSettings(account_ip_free=1, account_ip_block=5, initial_delay=delay, **ip)
    throttle = LoginThrottle(MemoryFailureStore(), policy, clock=lambda: 1000.0)
    checked: list[str] = []

    class Slow:  # a backend that takes its time (bcrypt) and refuses every guess
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            checked.append(credentials.account)
            # Each check a little longer than the one before: the first of a burst fails
            # (on record) while the others still run, unrecorded.
            await anyio.sleep(0.01 * len(checked))
            return AuthResult(Outcome.REJECTED)

    login = GuardedLogin(Slow(), throttle, realm="r", sleep=lambda _: anyio.sleep(0))
    names = (lambda n: "bob") if where == "pair" else (lambda n: f"user{n}")
    before = 0
    if on_record:  # a failure on record (and, for the address, enough of them to suspect it)
        before = 1 if where == "pair" else 3
        for n in range(before):
            with pytest.raises(AuthenticationError):
                await login.check(Credentials(names(n), SecretStr("g"), client_ip="192.0.2.66"))
    outcomes = await _guess_at_once(login, [names(n) for n in range(100, 300)], "192.0.2.66")
    limit = policy.account_ip_block if where == "pair" else policy.ip_block
    assert len(checked) == limit  # every password checked, and not one more
    assert outcomes.count("401") == limit - before
    assert outcomes.count("429") == 200 - (limit - before)
    assert not login._turns
    assert not login._checking
    assert not login._finished


@pytest.mark.anyio
@pytest.mark.parametrize("free", [0, 20])
async def test_a_crowd_of_good_logins_from_one_address_runs_at_once(free: int) -> None:
    """100 accounts behind one NAT address (a CI farm), each a slow check (bcrypt), nothing on
    record: all checked at once, not one after another past the free allowance."""
    policy = BruteForceSettings(ip_free=free, ip_block=200)
    throttle = LoginThrottle(MemoryFailureStore(), policy, clock=lambda: 1000.0)

    class Slow:
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            await anyio.sleep(0.1)
            return AuthResult(Outcome.ACCEPTED, account=credentials.account)

    login = GuardedLogin(Slow(), throttle, realm="r")
    accepted: list[bool] = []

    async def job(n: int) -> None:
        result = await login.check(Credentials(f"ci{n}", SecretStr("s"), client_ip="10.1.1.1"))
        accepted.append(result.accepted)

    started = anyio.current_time()
    async with anyio.create_task_group() as group:
        for n in range(100):
            group.start_soon(job, n)
    assert accepted == [True] * 100
    assert anyio.current_time() - started < 1  # 100 checks of 0.1 s one after another: 10 s
    assert not login._checking
    assert not login._turns


@pytest.mark.anyio
async def test_parallel_logins_with_the_same_good_password_all_pass_on_one_check() -> None:
    """A CI host's parallel jobs log in with one secret at once: past the block's worth of
    checks at once the rest wait for one to end, then pass at once on the credential cache
    (one bcrypt check for all)."""
    throttle = LoginThrottle(MemoryFailureStore(), POLICY, clock=lambda: 1000.0)
    checks: list[str] = []

    class Slow:
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            checks.append(credentials.account)
            await anyio.sleep(0.05)
            return AuthResult(Outcome.ACCEPTED, account=credentials.account)

    cached = CachingAuthenticator(Slow(), ttl=60, max_entries=100, version=lambda _: b"v1")
    login = GuardedLogin(cached, throttle, realm="r")
    accepted: list[bool] = []

    async def job() -> None:
        result = await login.check(Credentials("ci", SecretStr("s3cret"), client_ip="10.1.1.1"))
        accepted.append(result.accepted)

    started = anyio.current_time()
    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(job)
    assert accepted == [True] * 50
    assert checks == ["ci"]
    assert anyio.current_time() - started < 1  # not fifty checks one after another
    assert not login._checking


def test_a_shared_network_takes_ipv4_mapped_clients_and_counts_the_pair_only() -> None:
    policy = BruteForceSettings(shared_networks=["198.51.100.128/25", "2001:db8:5::/64"])  # type: ignore[list-item]
    throttle = LoginThrottle(MemoryFailureStore(), policy, lambda: 1000.0)
    for client in ("198.51.100.200", "::ffff:198.51.100.200", "2001:db8:5::77"):
        assert throttle.keys("ci", client) == [counter_keys("ci", client)[0]], client
    for client in ("198.51.100.7", "2001:db8:6::1", None):
        assert throttle.keys("ci", client) == list(counter_keys("ci", client)), client


class _DownStore(MemoryFailureStore):
    """A store that cannot be reached (etcd down, hanging, or slowed by a login flood)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        if self.down:
            raise StateStoreError("etcd v3 at http://127.0.0.1:9: timed out")
        return super().failures(keys, now, window)

    def failures_now(
        self, keys: list[str], now: float, window: int
    ) -> dict[str, FailureCount] | None:
        return self.failures(keys, now, window)

    def add_failure(self, keys: list[str], now: float, window: int) -> None:
        if self.down:
            raise StateStoreError("etcd v3 at http://127.0.0.1:9: timed out")
        super().add_failure(keys, now, window)


def test_while_the_store_is_down_failures_are_counted_in_memory_not_forgotten() -> None:
    """An outage of the shared store (or an attacker slowing etcd) made guessing free: every
    failure went uncounted. Now each process counts them in memory meanwhile, and judges the
    two together once the store is back."""
    store, clock = _DownStore(), [1000.0]
    throttle = LoginThrottle(store, POLICY, lambda: clock[0], fallback=MemoryFailureStore())
    for _ in range(POLICY.account_ip_block):
        assert not throttle.check("alice", "192.0.2.9").blocked
        throttle.failed("alice", "192.0.2.9")
    assert throttle.check("alice", "192.0.2.9").blocked
    store.down = False  # back: what it holds and what memory kept add up
    assert throttle.check("alice", "192.0.2.9").pair_failures == POLICY.account_ip_block
    throttle.failed("bob", "192.0.2.9")
    assert throttle.check("bob", "192.0.2.9").ip_failures == POLICY.account_ip_block + 1
    # Without a fallback (the in-memory store itself), an outage still fails open.
    open_throttle = LoginThrottle(_DownStore(), POLICY, lambda: clock[0])
    for _ in range(POLICY.account_ip_block + 5):
        open_throttle.failed("alice", "192.0.2.9")
    assert not open_throttle.check("alice", "192.0.2.9").blocked


def test_failures_counted_in_memory_go_to_the_store_once_it_is_back() -> None:
    """Kept in memory, they outlived the outage by the whole window: the other instances never
    saw them, and `logins reset` (which clears the store) could not unblock the account."""
    store, clock = _DownStore(), [1000.0]
    throttle = LoginThrottle(store, POLICY, lambda: clock[0], fallback=MemoryFailureStore())
    for _ in range(POLICY.account_ip_block):
        throttle.failed("alice", "192.0.2.9")
    pair, ip = counter_keys("alice", "192.0.2.9")
    throttle.check("alice", "192.0.2.9")  # still down: nothing handed back, nothing lost
    assert throttle.check("alice", "192.0.2.9").blocked
    store.down = False
    assert throttle.check("alice", "192.0.2.9").blocked
    held = MemoryFailureStore.failures(store, [pair, ip], clock[0], POLICY.window)
    assert {key: c.count for key, c in held.items()} == {
        pair: POLICY.account_ip_block,
        ip: POLICY.account_ip_block,
    }
    store.reset(pair)  # what `logins reset --account alice --ip 192.0.2.9` does
    assert not throttle.check("alice", "192.0.2.9").blocked


def test_a_handed_back_failure_never_ends_a_block_early() -> None:
    """Written at its own (older) time, it moved the store's latest failure back: another
    instance's block on the account ended that much early."""
    store, clock = _DownStore(), [1000.0]
    throttle = LoginThrottle(store, POLICY, lambda: clock[0], fallback=MemoryFailureStore())
    throttle.failed("alice", "192.0.2.9")  # in memory, at 1000
    store.down = False
    keys, window = list(counter_keys("alice", "192.0.2.9")), POLICY.window
    for _ in range(POLICY.account_ip_block):  # another instance blocks alice, at 1040
        MemoryFailureStore.add_failure(store, keys, 1040, window)
    clock[0] = 1050.0
    verdict = throttle.check("alice", "192.0.2.9")  # handed back now
    assert verdict.blocked
    assert verdict.retry_after is not None
    assert verdict.retry_after >= 1040 + window - 1050  # not before the other's block ends
    clock[0] = 1040 + window - 5.0
    assert throttle.check("alice", "192.0.2.9").blocked


def test_logins_take_the_thread_path_until_memory_is_handed_back() -> None:
    """The event loop's answer (check_now) never writes; with failures held in memory it sends
    the login to `check`, which hands them back: else, on a store that always answers at once
    (SQLite), they stayed in memory while no other login failed."""
    store, clock = _DownStore(), [1000.0]
    throttle = LoginThrottle(store, POLICY, lambda: clock[0], fallback=MemoryFailureStore())
    assert throttle.check_now("bob", "192.0.2.1") is not None or store.down  # down: it raises
    throttle.failed("alice", "192.0.2.9")
    store.down = False
    assert throttle.check_now("bob", "192.0.2.1") is None
    assert throttle.check("bob", "192.0.2.1") == NO_FAILURES
    assert throttle.check_now("alice", "192.0.2.9").pair_failures == 1  # type: ignore[union-attr]


def test_failures_are_handed_back_a_batch_per_login() -> None:
    store, clock = _DownStore(), [1000.0]
    policy = BruteForceSettings(ip_free=500, ip_block=1000)
    throttle = LoginThrottle(store, policy, lambda: clock[0], fallback=MemoryFailureStore())
    for n in range(100):  # 100 accounts from one address: 200 failures on 101 keys
        throttle.failed(f"user{n}", "192.0.2.9")
    store.down = False
    writes: list[int] = []
    add = store.add_failure

    def counted(keys: list[str], now: float, window: int) -> None:
        writes.append(len(keys))
        add(keys, now, window)

    store.add_failure = counted  # type: ignore[method-assign]
    throttle.check("someone", "192.0.2.10")
    assert len(writes) == HAND_BACK_BATCH  # a login pays for one batch at most
    while len(writes) < 200:
        before = len(writes)
        throttle.check("someone", "192.0.2.10")
        assert len(writes) > before
    assert throttle.check("user5", "192.0.2.9").ip_failures == 100
    throttle.check("someone", "192.0.2.10")
    assert len(writes) == 200  # all handed back: nothing more to write


@pytest.mark.anyio
async def test_parallel_guesses_at_one_account_each_wait_their_own_delay() -> None:
    """With a failure on record, 50 parallel guesses at one account waited its one delay
    together and were then checked back to back: the block came without the delays that one
    guess after another waits (0.25, 0.5, 1, 2 s here). Now each, in turn, waits its own."""
    policy = BruteForceSettings(
        account_ip_free=1, account_ip_block=5, initial_delay=0.25, max_delay=4
    )
    throttle = LoginThrottle(MemoryFailureStore(), policy, clock=lambda: 1000.0)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await anyio.sleep(0)

    class Refuses:
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            await anyio.sleep(0.001)
            return AuthResult(Outcome.REJECTED)

    login = GuardedLogin(Refuses(), throttle, realm="r", sleep=sleep)
    with pytest.raises(AuthenticationError):
        await login.check(Credentials("bob", SecretStr("g0"), client_ip="192.0.2.66"))
    outcomes = await _guess_at_once(login, ["bob"] * 50, "192.0.2.66")
    assert outcomes.count("401") == 4  # checked: the 2nd to the 5th failure
    # All 50 waited the first delay (0.25 s) together; then the 2nd, 3rd and 4th guesses
    # checked waited the rest of theirs (0.5, 1 and 2 s in all), as one after another would.
    assert sorted(sleeps) == sorted([0.25] * 50 + [0.25, 0.75, 1.75])


@pytest.mark.anyio
async def test_logins_waiting_their_turn_behind_an_outage_get_its_503_at_once() -> None:
    """With a failure on record, 30 logins to a hung directory took turns, each waiting the
    backend's timeout (2 s) in turn: the last one was answered after a minute. An outage is
    never counted, so queueing them behind it served nothing."""
    policy = BruteForceSettings(account_ip_free=1, account_ip_block=50, initial_delay=0)
    throttle = LoginThrottle(MemoryFailureStore(), policy, clock=lambda: 1000.0)
    asked: list[str] = []

    class Hung:  # a wrong password once, then down (as LDAP with slapd stopped)
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            asked.append(credentials.account)
            if len(asked) == 1:
                return AuthResult(Outcome.REJECTED)
            await anyio.sleep(0.05)  # its timeout
            raise BackendUnavailableError("corp", "timed out")

    login = GuardedLogin(Hung(), throttle, realm="r")
    with pytest.raises(AuthenticationError):
        await login.check(Credentials("erin", SecretStr("wrong"), client_ip="192.0.2.66"))
    answers: list[str] = []

    async def attempt() -> None:
        try:
            await login.check(Credentials("erin", SecretStr("right"), client_ip="192.0.2.66"))
        except BackendUnavailableError as exc:
            answers.append(f"{exc.status} {exc.backend}")

    started = anyio.current_time()
    async with anyio.create_task_group() as group:
        for _ in range(30):
            group.start_soon(attempt)
    assert answers == ["503 corp"] * 30
    assert len(asked) == 2  # the directory asked once for the 30, not 30 times in turn
    assert anyio.current_time() - started < 1.0  # one timeout, not 30 one after another
    assert not login._turns
    assert not login._outages  # the queue gone: the next login asks the directory again
    with pytest.raises(BackendUnavailableError):
        await login.check(Credentials("erin", SecretStr("right"), client_ip="192.0.2.66"))
    assert len(asked) == 3
    assert throttle.check("erin", "192.0.2.66").pair_failures == 1  # outages never counted


@pytest.mark.anyio
async def test_an_outage_in_an_addresss_turn_is_not_shared_with_other_accounts() -> None:
    """Behind a suspect address every account takes one turn: alice (local users, up) queued
    behind dave (the directory, hung) was answered the directory's 503, never asking it."""
    policy = BruteForceSettings(ip_free=1, ip_block=50, account_ip_free=5, initial_delay=0)
    throttle = LoginThrottle(MemoryFailureStore(), policy, clock=lambda: 1000.0)

    class Chain:  # alice from the users file; dave from a directory that hangs
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            if credentials.account == "dave":
                await anyio.sleep(0.05)
                raise BackendUnavailableError("corp", "timed out")
            good = credentials.password.get_secret_value() == "pw"
            return AuthResult(Outcome.ACCEPTED if good else Outcome.REJECTED)

    login = GuardedLogin(Chain(), throttle, realm="r")
    for _ in range(2):  # the address is suspect now: one turn for all its logins
        with pytest.raises(AuthenticationError):
            await login.check(Credentials("alice", SecretStr("x"), client_ip="192.0.2.9"))
    answers: list[str] = []

    async def attempt(account: str) -> None:
        try:
            await login.check(Credentials(account, SecretStr("pw"), client_ip="192.0.2.9"))
            answers.append(f"{account} 200")
        except BackendUnavailableError:
            answers.append(f"{account} 503")

    async with anyio.create_task_group() as group:
        for account in ("dave", "dave", "alice", "alice"):
            group.start_soon(attempt, account)
            await anyio.sleep(0.001)  # in this order
    assert sorted(answers) == ["alice 200", "alice 200", "dave 503", "dave 503"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.UNNAMED, "the password is right but the account has no name (see the log)"),
        (Outcome.EXPIRED, "expired account"),
    ],
)
async def test_a_right_secret_refused_for_what_it_stands_for_is_not_counted(
    outcome: Outcome, reason: str
) -> None:
    """An LDAP entry without its `account_attribute`, an expired robot or CI token: the audit
    said "wrong password" (LDAP), and each try counted towards the block, though the secret
    was right: a job's stale token blocked every job of its runner (`ci`)."""
    throttle = LoginThrottle(MemoryFailureStore(), POLICY, clock=lambda: 1000.0)

    class Refusing:
        async def authenticate(self, credentials: Credentials) -> AuthResult:
            return AuthResult(outcome)

    login = GuardedLogin(Refusing(), throttle, realm="r")
    for _ in range(3):
        with pytest.raises(AuthenticationError) as refused:
            await login.check(Credentials("carol", SecretStr("right"), client_ip="192.0.2.5"))
        assert refused.value.reason == reason
    assert throttle.check("carol", "192.0.2.5").pair_failures == 0


async def _guess_at_once(login: GuardedLogin, accounts: list[str], where: str) -> list[str]:
    """A wrong password for each account, all at once from `where`: "401" or "429" each."""
    outcomes: list[str] = []

    async def guess(n: int) -> None:
        try:
            await login.check(Credentials(accounts[n], SecretStr(f"g{n}"), client_ip=where))
        except TooManyAttemptsError:
            outcomes.append("429")
        except AuthenticationError:
            outcomes.append("401")

    async with anyio.create_task_group() as group:
        for n in range(len(accounts)):
            group.start_soon(guess, n)
    return outcomes


@pytest.mark.anyio
async def test_failures_counted_in_memory_go_back_without_waiting_for_a_login() -> None:
    """Handed back only at this process's next login, they were not in `logins status`, and a
    `logins reset` made once the store was back was undone by that login (a 429 after
    "forgot the failed logins")."""
    store, clock = _DownStore(), [1000.0]
    throttle = LoginThrottle(store, POLICY, lambda: clock[0], fallback=MemoryFailureStore())
    for _ in range(POLICY.account_ip_block):
        throttle.failed("alice", "192.0.2.9")
    store.down = False  # back; no login reaches this process
    pair = counter_keys("alice", "192.0.2.9")[0]
    async with hand_back_lifespan(throttle, interval=0.01)(FastAPI()):
        for _ in range(100):
            await anyio.sleep(0.01)
            if not throttle.holds_failures():
                break
    assert store.failures([pair], clock[0], POLICY.window)[pair].count == POLICY.account_ip_block
    store.reset(pair)  # `logins reset`, from another process
    assert not throttle.check("alice", "192.0.2.9").blocked  # it holds


def test_a_blocked_pair_stays_blocked_while_its_failures_go_back_to_a_slow_store() -> None:
    """They were taken from memory before the store took them: for the whole of a hung
    etcd's timeout a blocked client's guesses found no failure and were checked."""
    store, clock = _DownStore(), [1000.0]
    throttle = LoginThrottle(store, POLICY, lambda: clock[0], fallback=MemoryFailureStore())
    for _ in range(POLICY.account_ip_block):
        throttle.failed("bob", "192.0.2.9")
    writing, release = threading.Event(), threading.Event()
    add_failure = store.add_failure

    def slow_add(keys: list[str], now: float, window: int) -> None:
        writing.set()
        release.wait(5)  # the store hangs
        add_failure(keys, now, window)

    store.down = False
    store.add_failure = slow_add  # type: ignore[method-assign]
    handing = threading.Thread(target=throttle.hand_back)
    handing.start()
    assert writing.wait(5)
    assert throttle.check("bob", "192.0.2.9").blocked  # meanwhile: still blocked
    release.set()
    handing.join(5)
    assert throttle.check("bob", "192.0.2.9").blocked  # and after, from the store


@pytest.mark.anyio
async def test_handing_back_to_a_hung_store_does_not_hold_the_shutdown() -> None:
    """The try ran in anyio's thread, which the app's stop waited for: a hung etcd held a
    SIGTERM for its timeout (30 s measured), past a supervisor's stop timeout."""
    release = threading.Event()

    class Hung:
        def holds_failures(self) -> bool:
            return True

        def hand_back(self) -> None:
            release.wait(10)

    started = time.monotonic()
    async with hand_back_lifespan(Hung(), interval=0.01)(FastAPI()):  # type: ignore[arg-type]
        await anyio.sleep(0.1)  # a try under way, hung
    assert time.monotonic() - started < 2
    release.set()
