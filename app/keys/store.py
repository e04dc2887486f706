"""Key files: the only module that reads or writes the keys directory.

Layout of a keys directory:
    <id>.key       private key, PEM PKCS#8, mode 0600
    <id>.crt       its self-signed certificate
    keyring.json   {"version": 1, "keys": [{"id", "kid", "algorithm", "state", "created"}]}
    bundle.pem     the certificates of every published key: the registry's rootcertbundle
Every write goes to a temporary file first and is renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from app.errors import KeyStoreError
from app.keys.model import (
    Algorithm,
    KeyRing,
    KeyState,
    PrivateKey,
    SigningKey,
    algorithm_for,
    check_pair,
)

RING_FILE = "keyring.json"
BUNDLE_FILE = "bundle.pem"
DEFAULT_CERT_DAYS = 365
_BACKDATE = timedelta(minutes=5)  # tolerate a registry whose clock runs a little behind

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def generate_key(
    keys_dir: Path,
    algorithm: Algorithm = Algorithm.RS256,
    *,
    days: int = DEFAULT_CERT_DAYS,
    state: KeyState = KeyState.ACTIVE,
    clock: Clock = _utcnow,
) -> SigningKey:
    """Create a key and its certificate in keys_dir, add it to the ring, rewrite the bundle.

    A new active key demotes the previous active key to retiring (it stays published).
    """
    private_key = _new_private_key(algorithm)
    now = clock()
    certificate = _self_signed(private_key, now, days)
    kid = check_pair(private_key, certificate)
    key = SigningKey(kid, algorithm, state, now, private_key, certificate)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    file_id = kid.replace(":", "")[:16].lower()
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(keys_dir / f"{file_id}.key", key_pem, mode=0o600)
    _write_atomic(keys_dir / f"{file_id}.crt", key.certificate_pem.encode(), mode=0o644)
    entries = _read_ring_file(keys_dir) if (keys_dir / RING_FILE).exists() else []
    if state is KeyState.ACTIVE:
        for entry in entries:
            if entry["state"] == KeyState.ACTIVE:
                entry["state"] = KeyState.RETIRING.value
    entries.append(
        {
            "id": file_id,
            "kid": kid,
            "algorithm": algorithm.value,
            "state": state.value,
            "created": now.isoformat(),
        }
    )
    _write_ring_file(keys_dir, entries)
    write_bundle(keys_dir, load_keyring(keys_dir))
    return key


def load_keyring(keys_dir: Path) -> KeyRing:
    """Read and check every key of the ring. KeyStoreError says what is wrong and what to do."""
    if not (keys_dir / RING_FILE).is_file():
        raise KeyStoreError(
            f"no signing key in {keys_dir}: run `registry-auth keys generate --keys-dir {keys_dir}`"
        )
    keys = tuple(_load_entry(keys_dir, entry) for entry in _read_ring_file(keys_dir))
    ring = KeyRing(keys)
    actives = [key.kid for key in keys if key.state is KeyState.ACTIVE]
    if len(actives) != 1:
        raise KeyStoreError(f"{keys_dir / RING_FILE}: {len(actives)} active keys, exactly 1 needed")
    return ring


def has_keys(keys_dir: Path) -> bool:
    return (keys_dir / RING_FILE).is_file()


def write_bundle(keys_dir: Path, ring: KeyRing) -> Path:
    """Rewrite bundle.pem with the certificate of every published key."""
    path = keys_dir / BUNDLE_FILE
    pem = "".join(key.certificate_pem for key in ring.published)
    _write_atomic(path, pem.encode("ascii"), mode=0o644)
    return path


def bundle_path(keys_dir: Path) -> Path:
    return keys_dir / BUNDLE_FILE


def _new_private_key(algorithm: Algorithm) -> PrivateKey:
    if algorithm is Algorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _self_signed(private_key: PrivateKey, now: datetime, days: int) -> x509.Certificate:
    public_key = private_key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-auth token signer")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )


def _load_entry(keys_dir: Path, entry: dict[str, Any]) -> SigningKey:
    key_path = keys_dir / f"{entry['id']}.key"
    _check_private(key_path)
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate((keys_dir / f"{entry['id']}.crt").read_bytes())
    except OSError as exc:
        raise KeyStoreError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise KeyStoreError(f"{key_path} or its .crt is not a valid PEM key/certificate") from None
    if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyStoreError(f"{key_path}: only RSA and EC P-256 keys can sign registry tokens")
    algorithm = algorithm_for(loaded)
    kid = check_pair(loaded, certificate)
    if kid != entry["kid"]:
        raise KeyStoreError(f"{key_path}: holds key {kid}, {RING_FILE} says {entry['kid']}")
    created = datetime.fromisoformat(entry["created"])
    return SigningKey(kid, algorithm, KeyState(entry["state"]), created, loaded, certificate)


def _check_private(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            f"{path} is readable by group or others (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`"
        )


def _read_ring_file(keys_dir: Path) -> list[dict[str, Any]]:
    path = keys_dir / RING_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["keys"]
        for entry in entries:
            KeyState(entry["state"])
            Algorithm(entry["algorithm"])
            _ = entry["id"], entry["kid"], entry["created"]
    except OSError as exc:
        raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise KeyStoreError(f"{path} is damaged: not a key ring written by registry-auth") from None
    return list(entries)


def _write_ring_file(keys_dir: Path, entries: list[dict[str, Any]]) -> None:
    text = json.dumps({"version": 1, "keys": entries}, indent=2) + "\n"
    _write_atomic(keys_dir / RING_FILE, text.encode("utf-8"), mode=0o644)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
