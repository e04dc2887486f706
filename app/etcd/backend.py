"""What the publisher needs from etcd, whatever the API: read, create, swap, delete, watch.

Each operation raises app.errors.EtcdError (one line naming the endpoint and the problem) or
EtcdConflictError when a compare-and-swap lost; third-party errors never leave a backend.
"""

from __future__ import annotations

from typing import Protocol

from app.etcd.record import Snapshot
from app.etcd.v2 import PythonEtcdBackend
from app.etcd.v3 import GatewayBackend
from app.settings_sections import EtcdSettings


class KeyBackend(Protocol):
    """One key in one etcd cluster."""

    @property
    def where(self) -> str:
        """For messages: 'etcd v2 at http://127.0.0.1:2379 key /lain/...'."""
        ...

    def read(self) -> Snapshot: ...

    def create(self, value: str) -> int:
        """Write only if the key is absent; the new store index."""
        ...

    def replace(self, value: str, version: int) -> int:
        """Write only if the key is still at `version`; the new store index."""
        ...

    def delete_if(self, value: str) -> bool:
        """Delete only if the key still holds `value`; whether it was deleted."""
        ...

    def wait_for_change(self, after: int, timeout: float) -> bool:
        """Block until the key changes after store index `after` (True) or `timeout` (False)."""
        ...

    def close(self) -> None:
        """Let go of connections kept between calls."""
        ...


def open_backend(settings: EtcdSettings) -> KeyBackend:
    """The backend for the configured API. Opens no connection yet."""
    if settings.api == "v3":
        return GatewayBackend(settings)
    return PythonEtcdBackend(settings)
