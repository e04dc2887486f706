"""The state stores' side of etcd (refresh tokens, login counters): their gateway client,
built from the `state:` settings, and the one place a GatewayError becomes StateStoreError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from app.errors import StateStoreError
from app.etcd.gateway import Connection, GatewayClient, GatewayError
from app.settings_sections import StateSettings


def open_state_client(state: StateSettings) -> GatewayClient:
    """Opens no connection yet: the first call does."""
    connection = Connection(
        state.etcd_endpoints,
        state.etcd_timeout,
        username=state.etcd_username,
        password=state.etcd_password,
        ca_cert=state.etcd_ca_cert,
        client_cert=state.etcd_client_cert,
        client_key=state.etcd_client_key,
    )
    return GatewayClient(connection)


@contextlib.contextmanager
def state_errors(etcd: GatewayClient) -> Iterator[None]:
    try:
        yield
    except GatewayError as exc:
        raise StateStoreError(f"{etcd.where}: {exc}") from exc
