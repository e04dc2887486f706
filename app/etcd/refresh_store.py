"""Refresh records in etcd v3: one key per token, `<prefix><sha256 of the token>`, JSON value,
and an index of each account's tokens, `<prefix>~a/<sha256 of the account>/<token hash>`.

Nothing is cached: every refresh grant reads its key, so a revocation through any instance
holds on every other at once (well within the one second asked for).

The index serves the login that trims an account's tokens to `refresh_tokens_per_account`:
without it, every `docker login` read every record of every account (2-2.5 s per login with
50,000 records). `~` sorts after every hex digit, so the range of the records themselves
(`<prefix>0` to `<prefix>g`) leaves the index out. An index entry holds a copy of the record as
it was issued (only its key is read here): a version before the index reads the whole prefix
and parses every value as a record, so during a rolling upgrade (or after a rollback) it sees
each token twice, and keeps working, where an empty value failed each of its logins. A record
written by such a version is in no index: it is still listed, revoked and purged (those read
every record), only not counted towards the per-account cap, and it ends with its lifetime.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import replace

from app.etcd.gateway import GatewayClient
from app.etcd.kv import (
    compare_exists,
    delete_op,
    deleted_count,
    deleted_kvs,
    prefix_end,
    put_op,
    range_op,
    ranged_kvs,
)
from app.etcd.state import state_errors
from app.state.model import RefreshRecord

MAX_TXN_OPS = 100  # etcd refuses transactions of more than 128 operations by default
_INDEX = b"~a/"

log = logging.getLogger(__name__)


def _parsed(key: bytes, value: bytes) -> RefreshRecord | None:
    """The record a value holds; None, said in the log, for a value that is not one (written
    under the prefix by something else): it failed every login that listed records with a 500,
    and `tokens list` and `tokens revoke` with a traceback."""
    try:
        return RefreshRecord.from_json(value)
    except (ValueError, TypeError):
        log.warning(
            "etcd key %s is not a refresh-token record: skipped", key.decode(errors="replace")
        )
        return None


def _records(pairs: Iterable[tuple[bytes, bytes]]) -> list[RefreshRecord]:
    return [record for key, value in pairs if (record := _parsed(key, value)) is not None]


class EtcdRefreshStore:
    local_reads = False  # every find is a round trip to etcd

    def __init__(self, etcd: GatewayClient, prefix: str) -> None:
        self._etcd = etcd
        self._prefix = prefix.encode("utf-8")

    def _key(self, token_hash: str) -> bytes:
        return self._prefix + token_hash.encode("ascii")

    def _index(self, account: str) -> bytes:
        """The prefix of the account's index keys."""
        return (
            self._prefix
            + _INDEX
            + hashlib.sha256(account.encode("utf-8")).hexdigest().encode()
            + b"/"
        )

    def add(self, record: RefreshRecord) -> None:
        value = record.to_json().encode("utf-8")
        indexed = self._index(record.account) + record.token_hash.encode("ascii")
        with state_errors(self._etcd):
            self._etcd.txn(
                [], [put_op(self._key(record.token_hash), value), put_op(indexed, value)]
            )

    def find(self, token_hash: str) -> RefreshRecord | None:
        with state_errors(self._etcd):
            found = self._etcd.range(self._key(token_hash)).kvs
        return _parsed(found[0].key, found[0].value) if found else None

    def touch(self, token_hash: str, last_used_at: int) -> None:
        key = self._key(token_hash)
        with state_errors(self._etcd):
            found = self._etcd.range(key).kvs
            if not found:
                return
            record = _parsed(found[0].key, found[0].value)
            if record is None:
                return
            value = replace(record, last_used_at=last_used_at).to_json().encode("utf-8")
            # Only if the key still exists: a touch must never bring back a revoked token.
            self._etcd.txn([compare_exists(key)], [put_op(key, value)])

    def records(self, account: str | None = None) -> list[RefreshRecord]:
        with state_errors(self._etcd):
            found = self._etcd.range(self._prefix + b"0", self._prefix + b"g").kvs
        records = _records((kv.key, kv.value) for kv in found)
        if account is not None:
            records = [r for r in records if r.account == account]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def account_records(self, account: str) -> list[RefreshRecord]:
        index = self._index(account)
        with state_errors(self._etcd):
            listed = self._etcd.range(index, prefix_end(index)).kvs
            hashes = [kv.key[len(index) :].decode("ascii") for kv in listed]
            records: list[RefreshRecord] = []
            stale: list[bytes] = []
            for start in range(0, len(hashes), MAX_TXN_OPS):
                chunk = hashes[start : start + MAX_TXN_OPS]
                done = self._etcd.txn([], [range_op(self._key(h)) for h in chunk])
                for token_hash, kvs in zip(chunk, ranged_kvs(done.responses), strict=True):
                    if kvs:
                        records.extend(_records([(kvs[0].key, kvs[0].value)]))
                    else:  # its record is gone (deleted by a version before the index)
                        stale.append(index + token_hash.encode("ascii"))
            for start in range(0, len(stale), MAX_TXN_OPS):
                self._etcd.txn([], [delete_op(key) for key in stale[start : start + MAX_TXN_OPS]])
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def delete(self, token_hashes: list[str]) -> int:
        deleted = 0
        with state_errors(self._etcd):
            for start in range(0, len(token_hashes), MAX_TXN_OPS):
                chunk = token_hashes[start : start + MAX_TXN_OPS]
                done = self._etcd.txn([], [delete_op(self._key(h), prev_kv=True) for h in chunk])
                deleted += deleted_count(done.responses)
                gone = _records((kv.key, kv.value) for kv in deleted_kvs(done.responses))
                if gone:
                    self._etcd.txn(
                        [],
                        [
                            delete_op(self._index(r.account) + r.token_hash.encode("ascii"))
                            for r in gone
                        ],
                    )
        return deleted

    def close(self) -> None:
        self._etcd.close()
