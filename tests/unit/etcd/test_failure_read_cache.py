"""The etcd failure store's read cache: a read that raced this process's own write is not kept.

A stand-in for the gateway (pure unit): the real etcd paths are tested in
tests/integration/test_failure_store_etcd.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, cast

from app.etcd.failure_store import EtcdFailureStore
from app.etcd.gateway import GatewayClient
from app.etcd.kv import RangeResult, TxnResult
from app.state.attempts import FailureCount


class FakeEtcd:
    """Keys -> (JSON value, version); range requests of a txn answered like the gateway does."""

    where = "fake etcd"

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}
        self.during_read: Callable[[], None] | None = None
        self.txns = 0

    def txn(self, compare: list[Any], success: list[dict[str, Any]]) -> TxnResult:
        self.txns += 1
        responses = []
        for op in success:
            key = op["request_range"]["key"]
            kvs = []
            if key in self.values:
                value, version = self.values[key]
                kvs = [{"key": key, "value": base64.b64encode(value).decode(), "version": version}]
            responses.append({"response_range": {"kvs": kvs}})
        if self.during_read is not None:  # another thread's failure lands mid-read
            hook, self.during_read = self.during_read, None
            hook()
        return TxnResult(True, responses, 1)

    def range(self, key: bytes) -> RangeResult:
        return RangeResult([], 1)

    def grant_lease(self, ttl: int) -> int:
        return 1

    def close(self) -> None:
        pass


def _store(fake: FakeEtcd) -> EtcdFailureStore:
    return EtcdFailureStore(cast(GatewayClient, fake), "/f/", read_cache=60, monotonic=lambda: 0)


def _set(fake: FakeEtcd, key: str, count: int) -> None:
    encoded = base64.b64encode(f"/f/n/{key}".encode()).decode()
    fake.values[encoded] = (json.dumps({"last_at": 100.0}).encode(), count)


def test_a_read_that_raced_a_failure_of_this_process_is_not_kept() -> None:
    fake = FakeEtcd()
    store = _store(fake)
    _set(fake, "pair", 1)

    def failure_meanwhile() -> None:
        _set(fake, "pair", 2)
        store._forget(["pair"])  # what add_failure does once its write is done

    fake.during_read = failure_meanwhile
    # This read saw the old value; it is answered, but not kept...
    assert store.failures(["pair"], 100.0, 60) == {"pair": FailureCount(1, 100.0)}
    # ...so the next read asks etcd again and sees the failure.
    assert store.failures(["pair"], 100.0, 60) == {"pair": FailureCount(2, 100.0)}


def test_kept_reads_are_bounded_least_recently_read_first(monkeypatch: Any) -> None:
    monkeypatch.setattr("app.etcd.failure_store.MAX_KEPT", 2)
    fake = FakeEtcd()
    store = _store(fake)
    for key in ("a", "b", "c"):
        _set(fake, key, 1)
        store.failures([key], 100.0, 60)
    for key in ("a", "b", "c"):
        _set(fake, key, 5)  # changed in etcd: only what was dropped is read again
    found = store.failures(["a", "b", "c"], 100.0, 60)
    assert {key: counter.count for key, counter in found.items()} == {"a": 5, "b": 1, "c": 1}


def test_counters_read_moments_ago_are_answered_at_once_without_etcd() -> None:
    fake, clock = FakeEtcd(), [0.0]
    store = EtcdFailureStore(
        cast(GatewayClient, fake), "/f/", read_cache=1.0, monotonic=lambda: clock[0]
    )
    _set(fake, "pair", 3)
    assert store.failures_now(["pair", "ip"], 100.0, 60) is None  # nothing read yet
    assert fake.txns == 0
    read = store.failures(["pair", "ip"], 100.0, 60)
    assert read == {"pair": FailureCount(3, 100.0)}
    assert fake.txns == 1

    clock[0] = 0.9
    assert store.failures_now(["pair", "ip"], 100.0, 60) == read
    assert store.failures_now(["pair", "ip"], 161.0, 60) == {}  # aged out of the window
    assert store.failures_now(["pair", "other"], 100.0, 60) is None  # one key never read
    assert fake.txns == 1  # none of these asked etcd

    clock[0] = 1.1  # older than read_cache: another machine's failures may have landed
    assert store.failures_now(["pair", "ip"], 100.0, 60) is None


def test_this_process_s_own_failure_is_never_answered_from_before_it() -> None:
    fake = FakeEtcd()
    store = _store(fake)
    _set(fake, "pair", 1)
    store.failures(["pair"], 100.0, 60)
    assert store.failures_now(["pair"], 100.0, 60) == {"pair": FailureCount(1, 100.0)}
    store._forget(["pair"])  # what add_failure and reset do once their write is done
    assert store.failures_now(["pair"], 100.0, 60) is None


def test_without_a_read_cache_nothing_is_answered_at_once() -> None:
    fake = FakeEtcd()
    store = EtcdFailureStore(cast(GatewayClient, fake), "/f/", read_cache=0.0)
    _set(fake, "pair", 1)
    store.failures(["pair"], 100.0, 60)
    assert store.failures_now(["pair"], 100.0, 60) is None
