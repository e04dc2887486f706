"""The publisher's key through the v3 API: app/etcd/gateway.py does the talking; here the
key's compare-and-swap rules, and GatewayError turned into EtcdError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from app.errors import EtcdConflictError, EtcdError
from app.etcd.gateway import Connection, GatewayClient, GatewayError
from app.etcd.kv import Json, compare_mod_revision, compare_value, delete_op, put_op
from app.etcd.record import Snapshot
from app.settings_sections import EtcdSettings


def connection_of(settings: EtcdSettings) -> Connection:
    return Connection(
        settings.endpoints,
        settings.timeout,
        username=settings.username,
        password=settings.password,
        ca_cert=settings.ca_cert,
        client_cert=settings.client_cert,
        client_key=settings.client_key,
    )


class GatewayBackend:
    """One key through the v3 JSON gateway; endpoints are tried in order."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._etcd = GatewayClient(connection_of(settings))
        self._key = settings.key.encode("utf-8")
        self.where = f"{self._etcd.where} key {settings.key}"

    def read(self) -> Snapshot:
        with self._converted():
            found = self._etcd.range(self._key)
        if not found.kvs:
            return Snapshot(None, None, found.revision)
        kv = found.kvs[0]
        return Snapshot(kv.value.decode("utf-8", errors="replace"), kv.mod_revision, found.revision)

    def create(self, value: str) -> int:
        compare = compare_mod_revision(self._key, 0)  # revision 0: the key is absent
        return self._put_if(compare, value, "already created by another writer meanwhile")

    def replace(self, value: str, version: int) -> int:
        compare = compare_mod_revision(self._key, version)
        return self._put_if(compare, value, "changed by another writer meanwhile")

    def delete_if(self, value: str) -> bool:
        with self._converted():
            compare = compare_value(self._key, value.encode("utf-8"))
            return self._etcd.txn([compare], [delete_op(self._key)]).succeeded

    def wait_for_change(self, after: int, timeout: float) -> bool:
        with self._converted():
            return self._etcd.watch(self._key, after + 1, timeout)

    def close(self) -> None:
        self._etcd.close()

    def _put_if(self, compare: Json, value: str, conflict: str) -> int:
        with self._converted():
            done = self._etcd.txn([compare], [put_op(self._key, value.encode("utf-8"))])
        if not done.succeeded:
            raise EtcdConflictError(f"{self.where}: {conflict}")
        return done.revision

    @contextlib.contextmanager
    def _converted(self) -> Iterator[None]:
        try:
            yield
        except GatewayError as exc:
            raise EtcdError(f"{self.where}: {exc}") from exc
