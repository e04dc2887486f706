"""Login-failure counters in etcd v3, shared by every instance: `<prefix><key hash>` -> JSON.

Each counter is put with a lease of the window's length, so etcd forgets idle counters by
itself. Increments are compare-and-swap on the key's revision, retried when another instance
wrote in between.

Every login reads its counters (account+IP, IP). Asking etcd each time cost two round trips
per login and capped a worker at a few hundred cached logins per second (README,
Performance), so reads are kept for `read_cache` seconds: all of a login's keys are read in
one transaction, and kept until then. This process's own failures and resets drop what it
kept at once; another instance's failures are seen within `read_cache` seconds.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from app.errors import StateStoreError
from app.etcd.gateway import GatewayClient
from app.etcd.kv import Json, KeyValue, compare_mod_revision, delete_op, put_op, range_op
from app.etcd.state import state_errors
from app.state.attempts import FailureCount

# Compare-and-swap retries under contention, with a randomized, growing pause between them
# (at most ~1.3 s in all) so that writers racing for one counter spread out instead of
# colliding again at once.
MAX_TRIES = 16
BACKOFF_BASE = 0.001
BACKOFF_CAP = 0.1
MAX_KEPT = 10_000  # counters kept from reads; the least recently read go first


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
        self._lock = threading.Lock()

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode("ascii")

    def _read(self, key: str) -> tuple[FailureCount | None, int]:
        found = self._etcd.range(self._key(key)).kvs
        if not found:
            return None, 0
        return _counter(found[0]), found[0].mod_revision

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        found, writes = self._fresh(keys)
        missing = [key for key in keys if key not in found]
        if missing:
            with state_errors(self._etcd):
                answer = self._etcd.txn([], [range_op(self._key(key)) for key in missing])
            read = {
                key: _counter(kvs[0]) if kvs else None
                for key, kvs in zip(missing, _ranges(answer.responses), strict=True)
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
                lease = self._etcd.grant_lease(window)
                for key in keys:
                    self._increment(key, now, window, lease)
        finally:
            self._forget(keys)  # after the write: a read that began before it is not kept

    def _increment(self, key: str, now: float, window: int, lease: int) -> None:
        for attempt in range(MAX_TRIES):
            if attempt:
                pause = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
                time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
            counter, revision = self._read(key)
            live = counter is not None and now - counter.last_at <= window
            count = counter.count + 1 if live and counter is not None else 1
            value = json.dumps({"count": count, "last_at": now}).encode("utf-8")
            done = self._etcd.txn(
                [compare_mod_revision(self._key(key), revision)],
                [put_op(self._key(key), value, lease)],
            )
            if done.succeeded:
                return
        raise StateStoreError(f"failure counter {key[:12]}: too much contention")

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


def _counter(found: KeyValue) -> FailureCount:
    data = json.loads(found.value)
    return FailureCount(int(data["count"]), float(data["last_at"]))


def _ranges(responses: list[Json]) -> list[list[KeyValue]]:
    """The key-values of each range request of a txn, in order."""
    return [
        [KeyValue.from_json(kv) for kv in response.get("response_range", {}).get("kvs") or []]
        for response in responses
    ]
