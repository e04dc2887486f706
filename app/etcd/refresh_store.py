"""Refresh records in etcd v3: one key per token, `<prefix><sha256 of the token>`, JSON value.

Nothing is cached: every refresh grant reads its key, so a revocation through any instance
holds on every other at once (well within the one second asked for).
"""

from __future__ import annotations

from dataclasses import replace

from app.etcd.gateway import GatewayClient
from app.etcd.kv import compare_exists, delete_op, deleted_count, prefix_end, put_op
from app.etcd.state import state_errors
from app.state.model import RefreshRecord

MAX_TXN_OPS = 100  # etcd refuses transactions of more than 128 operations by default


class EtcdRefreshStore:
    local_reads = False  # every find is a round trip to etcd

    def __init__(self, etcd: GatewayClient, prefix: str) -> None:
        self._etcd = etcd
        self._prefix = prefix.encode("utf-8")

    def _key(self, token_hash: str) -> bytes:
        return self._prefix + token_hash.encode("ascii")

    def add(self, record: RefreshRecord) -> None:
        with state_errors(self._etcd):
            self._etcd.put(self._key(record.token_hash), record.to_json().encode("utf-8"))

    def find(self, token_hash: str) -> RefreshRecord | None:
        with state_errors(self._etcd):
            found = self._etcd.range(self._key(token_hash)).kvs
        return RefreshRecord.from_json(found[0].value) if found else None

    def touch(self, token_hash: str, last_used_at: int) -> None:
        key = self._key(token_hash)
        with state_errors(self._etcd):
            found = self._etcd.range(key).kvs
            if not found:
                return
            record = RefreshRecord.from_json(found[0].value)
            value = replace(record, last_used_at=last_used_at).to_json().encode("utf-8")
            # Only if the key still exists: a touch must never bring back a revoked token.
            self._etcd.txn([compare_exists(key)], [put_op(key, value)])

    def records(self, account: str | None = None) -> list[RefreshRecord]:
        with state_errors(self._etcd):
            found = self._etcd.range(self._prefix, prefix_end(self._prefix)).kvs
        records = [RefreshRecord.from_json(kv.value) for kv in found]
        if account is not None:
            records = [r for r in records if r.account == account]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def delete(self, token_hashes: list[str]) -> int:
        deleted = 0
        with state_errors(self._etcd):
            for start in range(0, len(token_hashes), MAX_TXN_OPS):
                chunk = token_hashes[start : start + MAX_TXN_OPS]
                done = self._etcd.txn([], [delete_op(self._key(h)) for h in chunk])
                deleted += deleted_count(done.responses)
        return deleted

    def close(self) -> None:
        self._etcd.close()
