from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.errors import KeyStoreError
from app.keys.kid import libtrust_kid
from app.keys.model import Algorithm, KeyState
from app.keys.store import BUNDLE_FILE, generate_key, load_keyring


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_generate_writes_a_private_key_a_cert_and_the_bundle(
    tmp_path: Path, algorithm: Algorithm
) -> None:
    key = generate_key(tmp_path, algorithm)
    key_files = list(tmp_path.glob("*.key"))
    assert len(key_files) == 1
    assert key_files[0].stat().st_mode & 0o777 == 0o600
    bundle = x509.load_pem_x509_certificates((tmp_path / BUNDLE_FILE).read_bytes())
    assert [libtrust_kid(c.public_key()) for c in bundle] == [key.kid]  # type: ignore[arg-type]
    ring = load_keyring(tmp_path)
    assert ring.active.kid == key.kid
    assert ring.active.algorithm is algorithm


def test_a_second_generate_keeps_the_first_key_published(tmp_path: Path) -> None:
    first = generate_key(tmp_path, Algorithm.ES256)
    second = generate_key(tmp_path, Algorithm.ES256)
    ring = load_keyring(tmp_path)
    assert ring.active.kid == second.kid
    assert {k.kid: k.state for k in ring.keys} == {
        first.kid: KeyState.RETIRING,
        second.kid: KeyState.ACTIVE,
    }
    assert len(x509.load_pem_x509_certificates((tmp_path / BUNDLE_FILE).read_bytes())) == 2


def test_no_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="registry-auth keys generate"):
        load_keyring(tmp_path)


def test_a_missing_ring_says_why_and_offers_a_new_one_only_for_a_new_service(
    tmp_path: Path,
) -> None:
    """The same message is the reload error of a running service whose directory vanished:
    generating a new ring there would make every registry refuse its tokens."""
    with pytest.raises(KeyStoreError, match=r"gone does not exist \(for a new service: "):
        load_keyring(tmp_path / "gone")
    (tmp_path / "afile").write_text("")
    with pytest.raises(KeyStoreError, match=r"afile is a file, not a keys directory$"):
        load_keyring(tmp_path / "afile")


def test_a_key_path_that_is_a_directory_is_not_called_readable_by_others(
    tmp_path: Path,
) -> None:
    generate_key(tmp_path, Algorithm.ES256)
    key_file = next(tmp_path.glob("*.key"))
    key_file.unlink()
    key_file.mkdir(mode=0o755)
    with pytest.raises(KeyStoreError, match=r"\.key is not a file$"):
        load_keyring(tmp_path)


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    generate_key(tmp_path, Algorithm.ES256)
    key_file = next(tmp_path.glob("*.key"))
    key_file.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        load_keyring(tmp_path)


def test_an_unreadable_key_is_refused(tmp_path: Path) -> None:
    generate_key(tmp_path, Algorithm.ES256)
    next(tmp_path.glob("*.key")).write_text("not a key")
    with pytest.raises(KeyStoreError, match="not a valid PEM"):
        load_keyring(tmp_path)


def test_a_damaged_ring_file_is_refused(tmp_path: Path) -> None:
    generate_key(tmp_path, Algorithm.ES256)
    (tmp_path / "keyring.json").write_text("{")
    with pytest.raises(KeyStoreError, match="damaged"):
        load_keyring(tmp_path)


def test_a_swapped_certificate_is_refused(tmp_path: Path) -> None:
    generate_key(tmp_path / "a", Algorithm.ES256)
    generate_key(tmp_path / "b", Algorithm.ES256)
    cert_a = next((tmp_path / "a").glob("*.crt"))
    cert_a.write_bytes(next((tmp_path / "b").glob("*.crt")).read_bytes())
    with pytest.raises(KeyStoreError, match="does not belong"):
        load_keyring(tmp_path / "a")


def test_private_key_never_in_repr(tmp_path: Path) -> None:
    key = generate_key(tmp_path, Algorithm.ES256)
    text = repr(key)
    assert "PRIVATE" not in text
    assert "private_key" not in text
    assert json.loads((tmp_path / "keyring.json").read_text())["keys"][0]["kid"] == key.kid


def _swap_private_key(keys_dir: Path, new_key: object) -> Path:
    (key_file,) = keys_dir.glob("*.key")
    pem = new_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file.write_bytes(pem)
    return key_file


@pytest.mark.parametrize(
    ("new_key", "problem"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), "RSA key of 1024 bits: at least 2048"),  # noqa: S505 - the weak key is the point
        (lambda: ec.generate_private_key(ec.SECP384R1()), "EC curve secp384r1: only P-256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "its certificate (.crt) does not"),
    ],
    ids=["rsa-1024", "p-384", "not-the-certificate's-key"],
)
def test_a_key_the_ring_cannot_use_is_named_by_its_file(
    tmp_path: Path, new_key: Any, problem: str
) -> None:
    """A ring holds several keys: an error without the file left the operator guessing."""
    generate_key(tmp_path, Algorithm.ES256)
    key_file = _swap_private_key(tmp_path, new_key())
    with pytest.raises(KeyStoreError) as raised:
        load_keyring(tmp_path)
    assert str(raised.value).startswith(f"{key_file}: ")
    assert problem in str(raised.value)


@pytest.mark.parametrize("name", ["*.crt", "keyring.json", "*.key"])
def test_a_fifo_in_the_ring_is_refused_at_once_not_read(tmp_path: Path, name: str) -> None:
    """Reading one blocked for ever: `serve` hung without a word, and at reload the thread that
    reloads every file stopped for good (SIGTERM could not end the process either)."""
    generate_key(tmp_path, Algorithm.ES256)
    path = next(tmp_path.glob(name))
    path.unlink()
    os.mkfifo(path, 0o600)
    refusal = rf"{re.escape(path.name)} is (a FIFO, )?not a (regular )?file$"
    with pytest.raises(KeyStoreError, match=refusal):
        load_keyring(tmp_path)


def test_an_encrypted_key_is_called_so(tmp_path: Path) -> None:
    generate_key(tmp_path, Algorithm.ES256)
    key_file = next(tmp_path.glob("*.key"))
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(KeyStoreError, match=r"\.key is encrypted \(a passphrase protects it\)"):
        load_keyring(tmp_path)


def test_a_directory_in_place_of_a_ring_file_is_named_and_leaves_no_descriptor_open(
    tmp_path: Path,
) -> None:
    """Each read left a descriptor open on it (`keys sync` looks every 10 s: EMFILE within
    hours), and the message said `Is a directory` instead of what is wrong."""
    generate_key(tmp_path, Algorithm.ES256)
    path = next(tmp_path.glob("*.crt"))
    path.unlink()
    path.mkdir()
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(20):
        with pytest.raises(KeyStoreError, match=r"\.crt is a directory, not a regular file$"):
            load_keyring(tmp_path)
    assert len(list(Path("/proc/self/fd").iterdir())) == before
