"""The JSON shapes of etcd's v3 gateway: what a range or txn answers, and the comparisons and
operations a txn takes. Pure: no I/O.

Keys and values travel base64-encoded; int64 fields travel as strings (the gateway takes and
gives them so); zero-valued fields are left out of answers.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    version: int = 0  # puts since the key was created (a delete or its lease's end: back to 0)
    create_revision: int = 0  # when this incarnation of the key was created

    @classmethod
    def from_json(cls, kv: Json) -> KeyValue:
        value = base64.b64decode(kv.get("value", ""))
        return cls(
            base64.b64decode(kv["key"]),
            value,
            int(kv.get("mod_revision", 0)),
            int(kv.get("version", 0)),
            int(kv.get("create_revision", 0)),
        )


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int  # the store's revision when read: watch from here


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool  # every comparison held, and `success` ran
    responses: list[Json]
    revision: int


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's own rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


def compare_exists(key: bytes) -> Json:
    return {"key": b64(key), "target": "VERSION", "result": "GREATER", "version": "0"}


def compare_mod_revision(key: bytes, revision: int) -> Json:
    """Holds while the key is as last read: absent (0) or unchanged since that revision."""
    if revision == 0:
        return {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def compare_created(key: bytes, revision: int) -> Json:
    """Holds while the key is the incarnation created at `revision` (not deleted since)."""
    return {
        "key": b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(revision),
    }


def compare_value(key: bytes, value: bytes) -> Json:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def put_op(key: bytes, value: bytes, lease: int | None = None, *, prev_kv: bool = False) -> Json:
    """With `prev_kv`, the answer holds the key as it was before (see `previous_kvs`)."""
    put: Json = {"key": b64(key), "value": b64(value)}
    if lease is not None:
        put["lease"] = str(lease)
    if prev_kv:
        put["prev_kv"] = True
    return {"request_put": put}


def previous_kvs(responses: list[Json]) -> list[KeyValue | None]:
    """What each `prev_kv` put of a txn replaced, in order; None where the key was new."""
    found: list[KeyValue | None] = []
    for response in responses:
        put = response.get("response_put")
        if put is not None:
            prev = put.get("prev_kv")
            found.append(KeyValue.from_json(prev) if prev else None)
    return found


def range_op(key: bytes) -> Json:
    return {"request_range": {"key": b64(key)}}


def delete_op(key: bytes, *, prev_kv: bool = False) -> Json:
    """With `prev_kv`, the answer holds what was deleted (see `deleted_kvs`)."""
    delete: Json = {"key": b64(key)}
    if prev_kv:
        delete["prev_kv"] = True
    return {"request_delete_range": delete}


def deleted_kvs(responses: list[Json]) -> list[KeyValue]:
    """The keys a txn's `prev_kv` deletes removed, as they were."""
    return [
        KeyValue.from_json(kv)
        for response in responses
        for kv in response.get("response_delete_range", {}).get("prev_kvs") or []
    ]


def deleted_count(responses: list[Json]) -> int:
    """How many keys the delete operations of a txn removed."""
    return sum(int(r.get("response_delete_range", {}).get("deleted", 0)) for r in responses)


def ranged_kvs(responses: list[Json]) -> list[list[KeyValue]]:
    """The key-values of each range request of a txn, in order."""
    return [
        [KeyValue.from_json(kv) for kv in response.get("response_range", {}).get("kvs") or []]
        for response in responses
    ]
