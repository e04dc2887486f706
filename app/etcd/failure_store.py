"""Login-failure counters in etcd v3, shared by every instance: `<prefix>n/<key hash>`.

A counter is etcd's own count of puts to its key (the key's `version`); the value holds the
time of the latest failure. So a failure is one unconditional put, which etcd applies in order
however many instances and workers fail at once: nothing to retry, nothing lost. (Counters
kept as a number in the value, raised by compare-and-swap, lost increments under contention:
the swap gave up after 16 tries, and a lost pair increment skipped the IP one.) A failure puts
both of its keys in one transaction.

Keys carry a lease that outlives the window by a tenth (so etcd forgets idle counters by
itself), shared by every failure of the next tenth of the window: a lease per failure left
hundreds of leases for a few keys. A counter idle longer than the window whose lease has not yet
run out restarts: the put that finds it idle deletes it and puts again the failures put since.
A value under the prefix that is not a counter is read as none, and the next failure replaces
it (it was a 500 on every login it concerned).

Every login reads its counters (account+IP, IP). Asking etcd each time cost two round trips
per login and capped a worker at a few hundred cached logins per second (README,
Performance), so reads are kept for `read_cache` seconds: all of a login's keys are read in
one transaction, and kept until then. This process's own failures and resets drop what it
kept at once; another instance's failures are seen within `read_cache` seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from app.etcd.gateway import GatewayClient, GatewayError
from app.etcd.kv import (
    KeyValue,
    TxnResult,
    compare_created,
    delete_op,
    deleted_kvs,
    previous_kvs,
    put_op,
    range_op,
    ranged_kvs,
)
from app.etcd.state import state_errors
from app.state.attempts import FailureCount

log = logging.getLogger(__name__)

MAX_KEPT = 10_000  # counters kept from reads; the least recently read go first
LEASE_SLACK = 0.1  # a lease outlives the window by this share of it (at least a second)


class EtcdFailureStore:
    def __init__(
        self,
        etcd: GatewayClient,
        prefix: str,
        read_cache: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._etcd = etcd
        self._prefix = prefix.encode("utf-8")
        self._read_cache = read_cache
        self._monotonic = monotonic
        # key -> (when read, the counter or None): answered from here while fresh enough.
        self._kept: OrderedDict[str, tuple[float, FailureCount | None]] = OrderedDict()
        self._writes = 0  # bumped by every failure or reset: a read racing one is not kept
        # window -> (lease id, when it runs out on self._monotonic): shared by failures.
        self._leases: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._granting = threading.Lock()  # one lease grant at a time

    def _key(self, key: str) -> bytes:
        return self._prefix + b"n/" + key.encode("ascii")

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        found, writes = self._fresh(keys)
        missing = [key for key in keys if key not in found]
        if missing:
            with state_errors(self._etcd):
                answer = self._etcd.txn([], [range_op(self._key(key)) for key in missing])
            read = {
                key: _counter(kvs[0]) if kvs else None
                for key, kvs in zip(missing, ranged_kvs(answer.responses), strict=True)
            }
            self._keep(read, writes)
            found.update(read)
        return _live(found, now, window)

    def failures_now(
        self, keys: list[str], now: float, window: int
    ) -> dict[str, FailureCount] | None:
        """From the counters read less than `read_cache` seconds ago, on the event loop (the
        hop to a worker thread and back cost a third of a cached login); None when any of
        `keys` must be read from etcd."""
        found, _ = self._fresh(keys)
        if len(found) < len(keys):
            return None
        return _live(found, now, window)

    def _fresh(self, keys: list[str]) -> tuple[dict[str, FailureCount | None], int]:
        """The kept counters among `keys` still fresh enough, and the write count now."""
        found: dict[str, FailureCount | None] = {}
        oldest = self._monotonic() - self._read_cache
        with self._lock:
            for key in keys:
                kept = self._kept.get(key)
                if kept is not None and kept[0] > oldest:
                    found[key] = kept[1]
            return found, self._writes

    def _keep(self, read: dict[str, FailureCount | None], writes_before: int) -> None:
        if self._read_cache <= 0:
            return
        at = self._monotonic()
        with self._lock:
            if self._writes != writes_before:
                return  # a failure or reset landed meanwhile: what was read may predate it
            for key, counter in read.items():
                self._kept[key] = (at, counter)
                self._kept.move_to_end(key)
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)

    def _forget(self, keys: list[str]) -> None:
        with self._lock:
            self._writes += 1
            for key in keys:
                self._kept.pop(key, None)

    def add_failure(self, keys: list[str], now: float, window: int) -> None:
        try:
            with state_errors(self._etcd):
                self._count(keys, now, window)
        finally:
            self._forget(keys)  # after the write: a read that began before it is not kept

    def _count(self, keys: list[str], now: float, window: int) -> None:
        value = json.dumps({"last_at": now}).encode("utf-8")
        lease = self._lease(window)
        try:
            done = self._put(keys, value, lease)
        except GatewayError as exc:
            if "lease not found" not in str(exc):
                raise
            # Revoked, or run out while this process slept: a new one, once.
            lease = self._lease(window, instead_of=lease)
            done = self._put(keys, value, lease)
        for key, before in zip(keys, previous_kvs(done.responses), strict=True):
            if before is None:
                continue
            counter = _counter(before)
            if counter is None or now - counter.last_at > window:
                self._restart(key, before, value, lease)

    def _put(self, keys: list[str], value: bytes, lease: int) -> TxnResult:
        return self._etcd.txn([], [put_op(self._key(k), value, lease, prev_kv=True) for k in keys])

    def _restart(self, key: str, before: KeyValue, value: bytes, lease: int) -> None:
        """The put found the counter idle past the window (its lease not yet run out), or not
        a counter at all: it counts again from the failures put since that one, ours first.
        Only the first put after the idle time sees it idle, so only one writer restarts; the
        failures others put meanwhile are put again after the delete (one put each: etcd
        takes a key once per transaction)."""
        path = self._key(key)
        done = self._etcd.txn(
            [compare_created(path, before.create_revision)], [delete_op(path, prev_kv=True)]
        )
        if not done.succeeded:
            return  # it is gone already (its lease ran out): a new key counts from 1
        for _ in range(sum(kv.version for kv in deleted_kvs(done.responses)) - before.version):
            self._etcd.txn([], [put_op(path, value, lease)])

    def _lease(self, window: int, *, instead_of: int | None = None) -> int:
        """A lease for counters put now: it outlives them by at most the slack, and is shared
        by the failures of the next `slack` seconds. One thread asks etcd for it, the others
        wait for that one (40 threads at once had granted 40). `instead_of`: a lease etcd no
        longer knows; a new one unless another thread got it already."""
        with self._granting:
            at = self._monotonic()
            with self._lock:
                kept = self._leases.get(window)
            if kept is not None and kept[0] != instead_of and kept[1] - at >= window:
                return kept[0]
            slack = max(1, round(window * LEASE_SLACK))
            lease = self._etcd.grant_lease(window + slack)
            with self._lock:
                self._leases[window] = (lease, at + window + slack)  # asked at `at`: ends later
            return lease

    def reset(self, key: str) -> None:
        try:
            with state_errors(self._etcd):
                self._etcd.txn([], [delete_op(self._key(key))])
        finally:
            self._forget([key])

    def close(self) -> None:
        self._etcd.close()


def _live(
    found: dict[str, FailureCount | None], now: float, window: int
) -> dict[str, FailureCount]:
    return {
        key: counter
        for key, counter in found.items()
        if counter is not None and counter.last_at >= now - window
    }


def _counter(found: KeyValue) -> FailureCount | None:
    """The key's version is the number of failures put since it was created. None for a value
    this store did not write (anyone with write access to the prefix could): read as no
    counter, rather than a 500 on every login it concerns, and the next failure's put makes it
    a counter again."""
    try:
        last_at = float(json.loads(found.value)["last_at"])
    except (ValueError, KeyError, TypeError):
        log.warning("etcd key %s is not a login counter: counted afresh", found.key.decode())
        return None
    return FailureCount(found.version, last_at)
