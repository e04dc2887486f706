"""A small client of etcd's v3 API through its JSON gateway (`/v3/kv/...`), over httpx.

Why this and not a gRPC client: the maintained Python etcd3 clients pull in grpcio and
protobuf (large native wheels, version pins that fight other packages), python-etcd speaks
only v2, and the few calls needed here — range, put, delete, txn — are one JSON POST each.
etcd 3.4 and later serve the gateway on the client URL by default. Keys and values travel
base64-encoded; int64 fields arrive as strings; zero-valued fields are left out.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from app.errors import StateStoreError

log = logging.getLogger(__name__)


class EtcdUnavailableError(StateStoreError):
    """No endpoint answered, or etcd refused the request."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int


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


def compare_exists(key: bytes) -> dict[str, Any]:
    return {"key": b64(key), "target": "VERSION", "result": "GREATER", "version": "0"}


def compare_mod_revision(key: bytes, revision: int) -> dict[str, Any]:
    """Holds while the key is as last read: absent (0) or unchanged since that revision."""
    if revision == 0:
        return {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def put_op(key: bytes, value: bytes, lease: int | None = None) -> dict[str, Any]:
    put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease is not None:
        put["lease"] = str(lease)
    return {"request_put": put}


def delete_op(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


class EtcdGateway:
    """The v3 KV calls, tried on each endpoint in turn until one answers."""

    def __init__(self, endpoints: list[str], timeout: float) -> None:
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self._client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def range(self, key: bytes, range_end: bytes | None = None) -> list[KeyValue]:
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        answer = self._call("kv/range", body)
        return [
            KeyValue(
                base64.b64decode(kv["key"]),
                base64.b64decode(kv.get("value", "")),
                int(kv.get("mod_revision", 0)),
            )
            for kv in answer.get("kvs", [])
        ]

    def put(self, key: bytes, value: bytes) -> None:
        self._call("kv/put", {"key": b64(key), "value": b64(value)})

    def grant_lease(self, ttl: int) -> int:
        """A lease of `ttl` seconds: keys put with it vanish when it runs out."""
        return int(self._call("lease/grant", {"TTL": str(ttl)})["ID"])

    def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]]
    ) -> tuple[bool, list[dict[str, Any]]]:
        """Whether every comparison held (and `success` ran), with the operations' answers."""
        answer = self._call("kv/txn", {"compare": compare, "success": success})
        return bool(answer.get("succeeded", False)), list(answer.get("responses", []))

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        problems: list[str] = []
        for endpoint in self.endpoints:
            url = f"{endpoint}/v3/{path}"
            try:
                response = self._client.post(url, json=body)
            except httpx.HTTPError as exc:
                problems.append(f"{endpoint}: {type(exc).__name__}")
                continue
            if response.status_code != 200:
                raise EtcdUnavailableError(
                    f"etcd at {endpoint} refused {path}: HTTP {response.status_code} "
                    f"{response.text[:200]!r}"
                )
            try:
                answer: dict[str, Any] = response.json()
            except ValueError:
                raise EtcdUnavailableError(f"{endpoint} is not an etcd v3 gateway") from None
            return answer
        raise EtcdUnavailableError(f"no etcd endpoint answered {path}: {'; '.join(problems)}")
