"""ReloadingTLS: the pair in force is the one every new handshake gets, whatever the key type;
an expired certificate is refused; a private key others may read is said. Handshakes run in
memory (MemoryBIO, as asyncio's transports do): no socket."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from app.api.tls import ReloadingTLS
from app.errors import ConfigError
from app.settings_sections import TlsSettings

NOW = dt.datetime.now(dt.UTC)


def write_pair(
    directory: Path, name: str, *, key_type: str, days: float = 1, starts_in: float = -2
) -> None:
    key = (
        rsa.generate_private_key(65537, 2048)
        if key_type == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=starts_in))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / "key.pem").touch(mode=0o600)
    (directory / "key.pem").write_bytes(pem)


def served_name(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """The common name of the certificate a handshake with `server` presents to `client`."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    tls_server = server.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(20):
        with contextlib.suppress(ssl.SSLWantReadError):
            tls_server.do_handshake()
        try:
            tls_client.do_handshake()
        except ssl.SSLWantReadError:
            continue
        der = tls_client.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    raise AssertionError("the handshake did not finish")


def client(*, rsa_only: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if rsa_only:  # a client that accepts RSA signatures only
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    return context


def settings(directory: Path) -> TlsSettings:
    return TlsSettings(cert=directory / "cert.pem", key=directory / "key.pem")


def replace_pair(directory: Path, name: str, *, key_type: str, days: float = 1) -> None:
    # A change of size or time is what the reload notices; a new pair has both.
    write_pair(directory, name, key_type=key_type, days=days)


def test_an_rsa_certificate_replaced_by_an_ecdsa_one_is_served_to_no_one(tmp_path: Path) -> None:
    write_pair(tmp_path, "rsa-one", key_type="rsa")
    tls = ReloadingTLS(settings(tmp_path))
    assert served_name(tls.context, client(rsa_only=True)) == "rsa-one"
    replace_pair(tmp_path, "ec-two", key_type="ec")
    assert tls.reload_if_changed()
    assert served_name(tls.context, client()) == "ec-two"
    # It stayed in the server context's RSA slot, served to clients offering RSA only.
    with pytest.raises(ssl.SSLError):
        served_name(tls.context, client(rsa_only=True))
    replace_pair(tmp_path, "rsa-three", key_type="rsa")
    assert tls.reload_if_changed()
    assert served_name(tls.context, client()) == "rsa-three"  # not the ECDSA one either


def test_an_expired_certificate_is_refused_and_the_previous_one_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pair(tmp_path, "good", key_type="ec")
    tls = ReloadingTLS(settings(tmp_path))
    replace_pair(tmp_path, "stale", key_type="ec", days=-1)
    with caplog.at_level(logging.ERROR, logger="app.api.tls"):
        assert not tls.reload_if_changed()
    assert "TLS reload failed, keeping the previous certificate" in caplog.text
    assert "expired" in caplog.text
    assert served_name(tls.context, client()) == "good"
    assert tls.not_after > NOW
    with pytest.raises(ConfigError, match=r"^config: tls\.cert: .* expired"):
        ReloadingTLS(settings(tmp_path))  # at the start: refused, one line


def test_a_certificate_not_valid_yet_is_refused_and_the_previous_one_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It was served: every client refused the handshake (`certificate is not yet valid`)
    while /readyz said ready and nothing warned."""
    write_pair(tmp_path, "good", key_type="ec")
    tls = ReloadingTLS(settings(tmp_path))
    write_pair(tmp_path, "early", key_type="ec", days=30, starts_in=2)
    with caplog.at_level(logging.ERROR, logger="app.api.tls"):
        assert not tls.reload_if_changed()
    assert "is not valid before" in caplog.text
    assert served_name(tls.context, client()) == "good"
    with pytest.raises(ConfigError, match=r"^config: tls\.cert: .* is not valid before"):
        ReloadingTLS(settings(tmp_path))


def test_a_renewal_made_ahead_is_served_once_its_time_comes(tmp_path: Path) -> None:
    """Refused as not valid yet, it was never tried again, the files unchanged: the old
    certificate went on until it expired."""
    write_pair(tmp_path, "good", key_type="ec")
    tls = ReloadingTLS(settings(tmp_path))
    ahead = (dt.datetime.now(dt.UTC) - NOW).total_seconds() + 1.5  # NOW is the import's
    write_pair(tmp_path, "renewed", key_type="ec", days=30, starts_in=ahead / 86400)
    assert not tls.reload_if_changed()
    assert served_name(tls.context, client()) == "good"
    time.sleep(1.6)
    assert tls.reload_if_changed()  # the same files, now valid
    assert served_name(tls.context, client()) == "renewed"
    assert not tls.reload_if_changed()  # and no more tries


def test_a_private_key_others_may_read_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pair(tmp_path, "open", key_type="ec")
    (tmp_path / "key.pem").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="app.api.tls"):
        ReloadingTLS(settings(tmp_path))
        ReloadingTLS(settings(tmp_path))  # the config check, then a worker: once
    assert caplog.messages == [
        f"tls.key {tmp_path / 'key.pem'} may be read by other users (mode 0644): chmod 600 it"
    ]


def served_and_another(tmp_path: Path, key_type: str) -> tuple[Path, Path, ReloadingTLS]:
    """A pair in `served/` loaded as the one in force, and another in `other/`."""
    served, other = tmp_path / "served", tmp_path / "other"
    for directory, name in ((served, "first"), (other, "second")):
        directory.mkdir()
        write_pair(directory, name, key_type=key_type)
    return (
        served,
        other,
        ReloadingTLS(TlsSettings(cert=served / "cert.pem", key=served / "key.pem")),
    )


def _swap_key(directory: Path, other: Path) -> None:
    (directory / "key.pem").write_bytes((other / "key.pem").read_bytes())


@pytest.mark.parametrize(
    ("breakage", "setting", "words"),
    [
        ("garbage cert", "tls.cert", "cert.pem holds no PEM certificate"),
        ("garbage key", "tls.key", "key.pem holds no PEM private key"),
        ("another key", "tls.key", "key.pem is not the key of the certificate in"),
    ],
)
def test_an_unusable_pair_names_the_file_and_its_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, breakage: str, setting: str, words: str
) -> None:
    """A bad key said `[SSL] PEM lib` and named tls.cert; a garbage certificate on reload, a
    message of cryptography's naming no file."""
    served, other, tls = served_and_another(tmp_path, key_type="rsa")
    if breakage == "garbage cert":
        (served / "cert.pem").write_text("not a certificate\n")
    elif breakage == "garbage key":
        (served / "key.pem").write_text("not a key\n")
    else:
        _swap_key(served, other)
    with caplog.at_level(logging.ERROR):
        assert tls.reload_if_changed() is False
    assert words in caplog.text
    with pytest.raises(ConfigError, match=rf"^config: {setting}: .*{words}"):
        ReloadingTLS(TlsSettings(cert=served / "cert.pem", key=served / "key.pem"))


@pytest.mark.parametrize(("missing", "setting"), [("key.pem", "tls.key"), ("cert.pem", "tls.cert")])
def test_a_missing_file_at_the_start_names_its_own_setting(
    tmp_path: Path, missing: str, setting: str
) -> None:
    """A missing key was blamed on tls.cert."""
    write_pair(tmp_path, "one", key_type="ec")
    (tmp_path / missing).unlink()
    with pytest.raises(ConfigError) as caught:
        ReloadingTLS(settings(tmp_path))
    assert caught.value.key == setting
    assert "No such file or directory" in caught.value.problem
