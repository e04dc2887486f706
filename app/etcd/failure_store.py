"""Login-failure counters in etcd v3, shared by every instance: `<prefix><key hash>` -> JSON.

Each counter is put with a lease of the window's length, so etcd forgets idle counters by
itself. Increments are compare-and-swap on the key's revision, retried when another instance
wrote in between.
"""

from __future__ import annotations

import json
import random
import time

from app.errors import StateStoreError
from app.etcd.gateway import GatewayClient
from app.etcd.kv import compare_mod_revision, delete_op, put_op
from app.etcd.state import state_errors
from app.state.attempts import FailureCount

# Compare-and-swap retries under contention, with a randomized, growing pause between them
# (at most ~1.3 s in all) so that writers racing for one counter spread out instead of
# colliding again at once.
MAX_TRIES = 16
BACKOFF_BASE = 0.001
BACKOFF_CAP = 0.1


class EtcdFailureStore:
    quick_reads = False

    def __init__(self, etcd: GatewayClient, prefix: str) -> None:
        self._etcd = etcd
        self._prefix = prefix.encode("utf-8")

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode("ascii")

    def _read(self, key: str) -> tuple[FailureCount | None, int]:
        found = self._etcd.range(self._key(key)).kvs
        if not found:
            return None, 0
        data = json.loads(found[0].value)
        return FailureCount(int(data["count"]), float(data["last_at"])), found[0].mod_revision

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        counts: dict[str, FailureCount] = {}
        with state_errors(self._etcd):
            for key in keys:
                counter, _ = self._read(key)
                if counter is not None and counter.last_at >= now - window:
                    counts[key] = counter
        return counts

    def add_failure(self, keys: list[str], now: float, window: int) -> None:
        with state_errors(self._etcd):
            lease = self._etcd.grant_lease(window)
            for key in keys:
                self._increment(key, now, window, lease)

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
        with state_errors(self._etcd):
            self._etcd.txn([], [delete_op(self._key(key))])

    def close(self) -> None:
        self._etcd.close()
