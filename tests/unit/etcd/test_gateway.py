"""The v3 gateway client's edges that need no etcd: TLS files that cannot be loaded, a closed
client, and each user's own error type at its boundary. (The calls themselves run against the
real etcd in tests/integration.)"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import urllib3
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError, SSLError

from app.errors import EtcdError, StateStoreError
from app.etcd.gateway import (
    Connection,
    GatewayClient,
    GatewayError,
    _answer,
    _EtcdSaidNoError,
    _explain_transport,
    _UnreachableError,
)
from app.etcd.kv import prefix_end
from app.etcd.refresh_store import EtcdRefreshStore
from app.etcd.state import open_state_client
from app.etcd.v2 import PythonEtcdBackend
from app.etcd.v3 import GatewayBackend
from app.keys.certs import new_private_key, self_signed
from app.keys.model import Algorithm
from app.settings_sections import EtcdSettings, StateSettings

# A port nothing listens on would be a network test; every case here fails before connecting.
ENDPOINT = "https://127.0.0.1:9"


def test_unreadable_tls_files_fail_the_call_not_the_construction(tmp_path: Path) -> None:
    client = GatewayClient(Connection([ENDPOINT], 1.0, ca_cert=tmp_path / "missing-ca.pem"))
    with pytest.raises(GatewayError, match="cannot load the TLS files") as caught:
        client.range(b"/k")
    assert f"ca_cert {tmp_path / 'missing-ca.pem'}: No such file or directory" in str(caught.value)


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_a_missing_tls_file_is_named_with_its_setting(tmp_path: Path, api: str) -> None:
    """Both clients said only `[Errno 2] No such file or directory`."""
    (tmp_path / "ca.pem").write_text("")
    settings = EtcdSettings(
        endpoints=[ENDPOINT], api=api, key="/lain/k", ca_cert=tmp_path / "ca.pem",
        client_cert=tmp_path / "client.pem", client_key=tmp_path / "client.key",
    )  # fmt: skip
    backend = GatewayBackend(settings) if api == "v3" else PythonEtcdBackend(settings)
    with pytest.raises(EtcdError) as caught:
        backend.read()
    named = f"cannot load the TLS files: client_cert {tmp_path / 'client.pem'}: No such file"
    assert named in str(caught.value)
    assert str(caught.value).count(ENDPOINT) == 1  # v2 said where twice, in a wrapped error


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_a_client_key_of_another_certificate_is_said_so(tmp_path: Path, api: str) -> None:
    """v2 said `cannot connect ([X509: KEY_VALUES_MISMATCH] ...)`: a network problem, read."""
    now = datetime.now(UTC)
    certificate = self_signed(new_private_key(Algorithm.ES256), now, 1)
    other_key = new_private_key(Algorithm.ES256)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = EtcdSettings(
        endpoints=[ENDPOINT], api=api, key="/lain/k", client_cert=cert, client_key=key
    )
    backend = GatewayBackend(settings) if api == "v3" else PythonEtcdBackend(settings)
    with pytest.raises(EtcdError) as caught:
        backend.read()
    assert (
        f"cannot load the TLS files: client_cert {cert} and client_key {key} do not load as a "
        "pair (the key is not the certificate's)"
    ) in str(caught.value)


def test_the_publisher_sees_an_etcd_error_naming_its_key(tmp_path: Path) -> None:
    settings = EtcdSettings(
        endpoints=[ENDPOINT], api="v3", key="/lain/k", ca_cert=tmp_path / "missing.pem"
    )
    with pytest.raises(EtcdError) as caught:
        GatewayBackend(settings).read()
    assert str(caught.value).startswith(f"etcd v3 at {ENDPOINT} key /lain/k: cannot load the TLS")


def test_the_state_store_sees_a_state_store_error_without_the_password(tmp_path: Path) -> None:
    state = StateSettings(
        backend="etcd",
        etcd_endpoints=[ENDPOINT],
        etcd_username="root",
        etcd_password=SecretStr("hunter2"),
        etcd_client_cert=tmp_path / "c.pem",
        etcd_client_key=tmp_path / "k.pem",
    )
    client = open_state_client(state)
    assert "hunter2" not in repr(client.connection)
    with pytest.raises(StateStoreError) as caught:
        EtcdRefreshStore(client, "/p/").find("0" * 64)
    assert str(caught.value).startswith(f"etcd v3 at {ENDPOINT}: cannot load the TLS files")
    assert "hunter2" not in str(caught.value)


def test_a_closed_client_says_so() -> None:
    store = EtcdRefreshStore(GatewayClient(Connection([ENDPOINT], 1.0)), "/p/")
    store.close()
    store.close()  # twice is fine: shutdown paths may overlap
    with pytest.raises(StateStoreError, match="the etcd client is closed"):
        store.records()


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/a/", b"/a0"), (b"a\xff", b"b"), (b"\xff\xff", b"\x00"), (b"", b"\x00")],
)
def test_prefix_end_is_etcds_rule(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


@pytest.mark.parametrize(
    ("endpoint", "prefix"),
    [("http://127.0.0.1:2379", ""), ("https://etcd.example.org/behind/a/proxy", "/behind/a/proxy")],
)
def test_an_endpoint_url_with_a_path_keeps_it_before_v3(endpoint: str, prefix: str) -> None:
    client = GatewayClient(Connection([endpoint], 1.0))
    pool, path = client._pool(endpoint)
    assert path == prefix
    assert client._pool(endpoint)[0] is pool
    client.close()


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            NewConnectionError(
                None, "Failed to establish a new connection: [Errno 111] Connection refused"
            ),
            "connection refused",
        ),
        (ReadTimeoutError(None, "/v3/kv/range", "read timed out"), "did not reply"),
        (ConnectTimeoutError(None, "connect timed out"), "cannot connect (timed out)"),
        (
            SSLError("EOF occurred in violation of protocol (_ssl.c:2427)"),
            "does it want a client certificate, signed by a CA it trusts?",
        ),
        (
            SSLError("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate"),
            "does it want a client certificate, signed by a CA it trusts?",
        ),
        (
            SSLError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
            "does it want a client certificate, signed by a CA it trusts?",
        ),
    ],
)
def test_transport_errors_read_as_the_operator_needs_them(error: Exception, words: str) -> None:
    assert words in _explain_transport(error)


def test_an_untrusted_server_certificate_does_not_blame_the_client_certificate() -> None:
    text = _explain_transport(SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] unable to get issuer"))
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert "client certificate" not in text


@pytest.mark.parametrize(
    ("code", "message", "outage"),
    [
        (14, "etcdserver: request timed out", True),  # no quorum: another member may serve
        (4, "context deadline exceeded", True),
        (2, "context deadline exceeded", True),
        (7, "etcdserver: permission denied", False),  # a refusal of this request
        (8, "etcdserver: mvcc: database space exceeded", False),
    ],
)
def test_a_members_cannot_serve_is_an_outage_and_a_refusal_is_not(
    code: int, message: str, outage: bool
) -> None:
    """A member without quorum answers `request timed out` after ~5 s: taken for a refusal,
    it was no outage, and every login waited those 5 s."""
    body = json.dumps({"code": code, "message": message}).encode()
    response = urllib3.HTTPResponse(body=body, status=503 if outage else 403)
    expected = _UnreachableError if outage else _EtcdSaidNoError
    with pytest.raises(expected, match=re.escape(message)):
        _answer("/v3/kv/range", response)
