"""The failure-counter contract on a real etcd (v3 gateway), and counters shared by instances."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.etcd.failure_store import EtcdFailureStore
from app.etcd.gateway import Connection, GatewayClient
from app.settings_sections import BruteForceSettings
from app.state.attempts import FailureCount, LoginThrottle, counter_keys
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.unit.hardening.failure_contract import FailureStoreContract


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


class TestEtcdFailureStore(FailureStoreContract):
    # With and without the read cache: this process's own failures and resets count at once.
    @pytest.fixture(params=[0.0, 60.0], ids=["read-each-time", "read-cache"])
    def failure_store(
        self, etcd: EtcdServer, request: pytest.FixtureRequest
    ) -> Iterator[EtcdFailureStore]:
        store = EtcdFailureStore(
            GatewayClient(Connection([etcd.url], 5.0)),
            f"/test/{request.node.name}/",
            read_cache=request.param,
        )
        yield store
        store.close()


def test_two_instances_share_the_counters_and_etcd_holds_no_names(etcd: EtcdServer) -> None:
    policy = BruteForceSettings(account_ip_free=1, account_ip_block=3, window=60)
    stores = [
        EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/shared/")
        for _ in range(2)
    ]
    first, second = (LoginThrottle(store, policy, lambda: 1000.0) for store in stores)
    first.failed("ci", "203.0.113.66")
    second.failed("ci", "203.0.113.66")
    first.failed("ci", "203.0.113.66")
    assert second.check("ci", "203.0.113.66").retry_after == 60
    assert not second.check("ci", "198.51.100.7").blocked
    listing = etcd.etcdctl("v3", "get", "--prefix", "/test/shared/").stdout
    assert "ci" not in listing.replace("/test/shared/", "")
    assert "203.0.113.66" not in listing
    for store in stores:
        store.close()


def test_an_etcd_outage_fails_open(tmp_path_factory: pytest.TempPathFactory) -> None:
    down = start_etcd(tmp_path_factory.mktemp("etcd-down"), start=False)
    throttle = LoginThrottle(
        EtcdFailureStore(GatewayClient(Connection([down.url], 0.5)), "/x/"),
        BruteForceSettings(),
        lambda: 0.0,
    )
    throttle.failed("ci", "203.0.113.66")  # logged, not raised
    assert not throttle.check("ci", "203.0.113.66").blocked


class CountingClient(GatewayClient):
    """The real client, counting the calls that reach etcd."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self.calls: list[str] = []

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(path)
        return super()._post(path, payload)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_login_reads_its_counters_in_one_round_trip_and_then_from_what_it_kept(
    etcd: EtcdServer,
) -> None:
    client, clock = CountingClient(Connection([etcd.url], 5.0)), Clock()
    store = EtcdFailureStore(client, "/test/kept/", read_cache=1.0, monotonic=clock)
    other = EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/kept/")
    try:
        other.add_failure(["pair", "ip"], 1000.0, 60)
        assert store.failures(["pair", "ip"], 1000.0, 60) == {
            "pair": FailureCount(1, 1000.0),
            "ip": FailureCount(1, 1000.0),
        }
        assert client.calls == ["/v3/kv/txn"]  # both keys, one request
        other.add_failure(["pair", "ip"], 1001.0, 60)  # another machine's failure
        clock.now = 0.9
        assert store.failures(["pair", "ip"], 1001.0, 60)["pair"].count == 1  # kept, not asked
        assert client.calls == ["/v3/kv/txn"]
        clock.now = 1.1  # older than read_cache: asked again
        assert store.failures(["pair", "ip"], 1001.0, 60)["pair"].count == 2
        assert client.calls == ["/v3/kv/txn", "/v3/kv/txn"]
        # Its own failure counts at once, whatever it kept.
        store.add_failure(["pair"], 1002.0, 60)
        assert store.failures(["pair", "ip"], 1002.0, 60)["pair"].count == 3
        # So does its own reset.
        store.reset("pair")
        assert set(store.failures(["pair", "ip"], 1002.0, 60)) == {"ip"}
    finally:
        store.close()
        other.close()


def test_without_a_read_cache_every_login_asks_etcd(etcd: EtcdServer) -> None:
    client = CountingClient(Connection([etcd.url], 5.0))
    store = EtcdFailureStore(client, "/test/uncached/", read_cache=0.0)
    try:
        for _ in range(3):
            assert store.failures(["pair", "ip"], 1000.0, 60) == {}
        assert client.calls == ["/v3/kv/txn"] * 3
    finally:
        store.close()


def _leases(etcd: EtcdServer) -> set[str]:
    # "found N leases", then a lease id per line
    return set(etcd.etcdctl("v3", "lease", "list").stdout.split("\n")[1:]) - {""}


def test_failures_from_many_instances_at_once_are_all_counted(etcd: EtcdServer) -> None:
    # Three instances, 16 threads each, one counter: compare-and-swap lost increments here
    # (it gave up after 16 tries, and a lost pair increment skipped the IP one).
    stores = [
        EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/storm/")
        for _ in range(3)
    ]

    def fail(step: int) -> None:
        stores[step % 3].add_failure(["pair", "ip"], 1000.0 + step / 1000, 60)

    try:
        with ThreadPoolExecutor(max_workers=48) as pool:
            list(pool.map(fail, range(480)))
        found = stores[0].failures(["pair", "ip"], 1001.0, 60)
        assert found["pair"].count == 480
        assert found["ip"].count == 480
    finally:
        for store in stores:
            store.close()


def test_failures_share_a_lease_that_outlives_the_window_by_a_tenth(etcd: EtcdServer) -> None:
    store = EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/leases/")
    before = _leases(etcd)
    try:
        for n in range(60):
            store.add_failure([f"pair{n}", "ip"], 1000.0 + n, 100)
        new = _leases(etcd) - before
        assert len(new) == 1  # a lease per failure left 60 here
        (lease,) = new
        granted = etcd.etcdctl("v3", "lease", "timetolive", lease).stdout
        assert "granted with TTL(110s)" in granted
        assert store.failures(["pair59", "ip"], 1060.0, 100)["ip"].count == 60
    finally:
        store.close()


def test_a_revoked_lease_is_replaced_and_its_counters_start_again(etcd: EtcdServer) -> None:
    store = EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/revoked/")
    before = _leases(etcd)
    try:
        store.add_failure(["pair", "ip"], 1000.0, 100)
        store.add_failure(["pair", "ip"], 1001.0, 100)
        for lease in _leases(etcd) - before:
            etcd.etcdctl("v3", "lease", "revoke", lease)  # its keys go with it
        store.add_failure(["pair", "ip"], 1002.0, 100)  # not an error: a new lease
        assert store.failures(["pair", "ip"], 1002.0, 100) == {
            "pair": FailureCount(1, 1002.0),
            "ip": FailureCount(1, 1002.0),
        }
    finally:
        store.close()


def test_failures_at_once_on_an_idle_counter_restart_it_together(etcd: EtcdServer) -> None:
    # Idle past the window, its lease not run out: only the first put sees it idle. Its delete
    # used to need no other put in between, else the old 9 stayed under the new failures.
    def store() -> EtcdFailureStore:
        return EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/edge/")

    first = store()
    for n in range(9):
        first.add_failure(["pair"], 1000.0 + n, 60)
    stores = [store() for _ in range(8)]
    start = threading.Barrier(len(stores))

    def fail(each: EtcdFailureStore) -> None:
        start.wait()
        each.add_failure(["pair"], 1200.0, 60)

    try:
        with ThreadPoolExecutor(max_workers=len(stores)) as pool:
            list(pool.map(fail, stores))
        assert first.failures(["pair"], 1200.0, 60)["pair"].count == 8
    finally:
        for each in [first, *stores]:
            each.close()


def test_threads_failing_at_once_share_one_new_lease(etcd: EtcdServer) -> None:
    store = EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), "/test/stampede/")
    before = _leases(etcd)
    start = threading.Barrier(40)

    def fail(n: int) -> None:
        start.wait()
        store.add_failure([f"pair{n}"], 1000.0, 100)

    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            list(pool.map(fail, range(40)))
        assert len(_leases(etcd) - before) == 1  # each thread granted its own: 40
    finally:
        store.close()


@pytest.mark.parametrize(
    ("junk", "prefix"),
    [("garbage", "text"), ('{"count": 3}', "old"), ("5", "number"), ('{"last_at": null}', "null")],
)
def test_a_value_that_is_no_counter_is_read_as_none_and_replaced(
    etcd: EtcdServer, junk: str, prefix: str
) -> None:
    # Anyone who can write the prefix could leave one; every login it concerned was a 500.
    prefix = f"/test/junk-{prefix}/"
    store = EtcdFailureStore(GatewayClient(Connection([etcd.url], 5.0)), prefix)
    throttle = LoginThrottle(store, BruteForceSettings(), lambda: 1000.0)
    pair_key, ip_key = counter_keys("ci", "203.0.113.66")
    try:
        etcd.etcdctl("v3", "put", f"{prefix}n/{ip_key}", junk)
        assert throttle.check("ci", "203.0.113.66").pair_failures == 0  # no exception
        assert store.failures([ip_key], 1000.0, 60) == {}
        throttle.failed("ci", "203.0.113.66")
        assert store.failures([pair_key, ip_key], 1000.0, 60) == {
            pair_key: FailureCount(1, 1000.0),
            ip_key: FailureCount(1, 1000.0),
        }
    finally:
        store.close()
