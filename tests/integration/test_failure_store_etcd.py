"""The failure-counter contract on a real etcd (v3 gateway), and counters shared by instances."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.etcd.failure_store import EtcdFailureStore
from app.etcd.gateway import Connection, GatewayClient
from app.settings_sections import BruteForceSettings
from app.state.attempts import LoginThrottle
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.unit.hardening.failure_contract import FailureStoreContract


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


class TestEtcdFailureStore(FailureStoreContract):
    @pytest.fixture
    def failure_store(
        self, etcd: EtcdServer, request: pytest.FixtureRequest
    ) -> Iterator[EtcdFailureStore]:
        store = EtcdFailureStore(
            GatewayClient(Connection([etcd.url], 5.0)), f"/test/{request.node.name}/"
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
