"""etcd over TLS with client certificates (the real etcd 3.4, `--client-cert-auth`): the state
stores and the publisher (v2 and v3) through it, the service keeping refresh tokens there, and
each way the handshake can fail a clear error naming the endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.errors import EtcdError, StateStoreError
from app.etcd.backend import open_backend
from app.etcd.failure_store import EtcdFailureStore
from app.etcd.refresh_store import EtcdRefreshStore
from app.etcd.state import forget_outages, open_state_client
from app.settings_sections import EtcdSettings, StateSettings
from tests.integration.support.authserver import start_auth_server
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.support.stack import USERS
from tests.integration.support.tlscerts import TlsFiles, make_tls_files
from tests.integration.test_refresh_tokens import refresh_grant, refresh_token_for
from tests.unit.hardening.failure_contract import FailureStoreContract
from tests.unit.test_state_sqlite import StoreContract


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("etcd-tls-files"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Files from a CA etcd does not know."""
    return make_tls_files(tmp_path_factory.mktemp("stranger-tls-files"))


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[EtcdServer]:
    server = start_etcd(tmp_path_factory.mktemp("etcd-tls"), tls=tls)
    yield server
    server.stop()


def tls_state(etcd: EtcdServer, tls: TlsFiles, **changes: Any) -> StateSettings:
    values: dict[str, Any] = {
        "backend": "etcd",
        "etcd_endpoints": [etcd.tls_url],
        "etcd_ca_cert": tls.ca,
        "etcd_client_cert": tls.client_cert,
        "etcd_client_key": tls.client_key,
    }
    return StateSettings(**{**values, **changes})


class TestEtcdStoreOverTls(StoreContract):
    @pytest.fixture
    def store(
        self, etcd: EtcdServer, tls: TlsFiles, request: pytest.FixtureRequest
    ) -> Iterator[EtcdRefreshStore]:
        store = EtcdRefreshStore(
            open_state_client(tls_state(etcd, tls)), f"/t/{request.node.name}/"
        )
        yield store
        store.close()


class TestEtcdFailureStoreOverTls(FailureStoreContract):
    @pytest.fixture
    def failure_store(
        self, etcd: EtcdServer, tls: TlsFiles, request: pytest.FixtureRequest
    ) -> Iterator[EtcdFailureStore]:
        store = EtcdFailureStore(
            open_state_client(tls_state(etcd, tls)), f"/u/{request.node.name}/"
        )
        yield store
        store.close()


def publisher_settings(etcd: EtcdServer, tls: TlsFiles, api: str, **changes: Any) -> EtcdSettings:
    values: dict[str, Any] = {
        "endpoints": [etcd.tls_url],
        "api": api,
        "key": f"/t/published-{api}",
        "ca_cert": tls.ca,
        "client_cert": tls.client_cert,
        "client_key": tls.client_key,
    }
    return EtcdSettings(**{**values, **changes})


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_the_publisher_writes_and_watches_over_tls(
    etcd: EtcdServer, tls: TlsFiles, api: str
) -> None:
    settings = publisher_settings(etcd, tls, api)
    backend = open_backend(settings)
    revision = backend.create('{"realm":"r"}')
    assert etcd.get(api, settings.key) == '{"realm":"r"}'
    assert backend.wait_for_change(revision, 0.5) is False  # nothing changed: the read times out
    etcd.put(api, settings.key, '{"realm":"changed"}')
    assert backend.wait_for_change(revision, 5.0) is True
    assert backend.read().value == '{"realm":"changed"}'
    backend.close()


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_a_refused_client_certificate_reads_the_same_from_both_apis(
    etcd: EtcdServer, tls: TlsFiles, stranger: TlsFiles, api: str
) -> None:
    for client_cert, client_key in [(None, None), (stranger.client_cert, stranger.client_key)]:
        backend = open_backend(
            publisher_settings(etcd, tls, api, client_cert=client_cert, client_key=client_key)
        )
        with pytest.raises(EtcdError) as caught:
            backend.read()
        message = str(caught.value)
        assert message.startswith(f"etcd {api} at {etcd.tls_url}"), message
        assert "does it want a client certificate, signed by a CA it trusts?" in message, message
        backend.close()


def failed_handshakes(tls: TlsFiles, stranger: TlsFiles) -> dict[str, dict[str, Any]]:
    """Each way a handshake fails, as the state settings it takes."""
    return {
        "etcd asks for a client certificate and gets none": {
            "etcd_client_cert": None,
            "etcd_client_key": None,
        },
        "the client certificate comes from a CA etcd does not trust": {
            "etcd_client_cert": stranger.client_cert,
            "etcd_client_key": stranger.client_key,
        },
        "no CA given: the system's CAs do not know etcd's": {"etcd_ca_cert": None},
    }


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("etcd asks for a client certificate and gets none", "does it want a client certificate"),
        ("the client certificate comes from a CA etcd does not trust", "a CA it trusts"),
        ("no CA given: the system's CAs do not know etcd's", "CERTIFICATE_VERIFY_FAILED"),
    ],
)
def test_a_failed_handshake_is_a_state_store_error_naming_the_endpoint(
    etcd: EtcdServer, tls: TlsFiles, stranger: TlsFiles, case: str, words: str
) -> None:
    changes = failed_handshakes(tls, stranger)[case]
    # etcd ends a refused handshake by hanging up or (as often, under load) with an alert
    # first; both must read the same, so each case tries several times.
    for _ in range(5):
        forget_outages()  # each try as a fresh process: else the outage answers at once
        store = EtcdRefreshStore(open_state_client(tls_state(etcd, tls, **changes)), "/t/x/")
        with pytest.raises(StateStoreError) as caught:
            store.records()
        message = str(caught.value)
        assert message.startswith(f"etcd v3 at {etcd.tls_url}: "), message
        assert words in message, message
        store.close()


def test_the_host_name_is_checked(etcd: EtcdServer, tls: TlsFiles) -> None:
    by_address = etcd.tls_url.replace("localhost", "127.0.0.1")  # not a name the cert holds
    store = EtcdRefreshStore(
        open_state_client(tls_state(etcd, tls, etcd_endpoints=[by_address])), "/t/x/"
    )
    with pytest.raises(StateStoreError, match=r"IP address mismatch|doesn't match"):
        store.records()
    store.close()


def test_the_service_keeps_refresh_tokens_in_etcd_over_tls(
    etcd: EtcdServer, tls: TlsFiles, tmp_path: Path
) -> None:
    state = tls_state(etcd, tls, etcd_prefix="/t/service/").model_dump(mode="json")
    auth = start_auth_server(tmp_path, users=USERS, extra_settings={"state": state})
    try:
        token = refresh_token_for(auth)
        assert refresh_grant(auth, token).status_code == 200
        listing = etcd.etcdctl("v3", "get", "--prefix", "--keys-only", "/t/service/").stdout
        assert len(listing.split()) == 2  # the record and its account's index entry
    finally:
        auth.stop()
