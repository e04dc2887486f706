"""Key files: the only module that reads or writes the keys directory.

Layout of a keys directory:
    <id>.key       private key, PEM PKCS#8, mode 0600
    <id>.crt       its self-signed certificate
    keyring.json   {"version": 1, "keys": [{"id", "kid", "algorithm", "state", "created",
                    "retiring_since" (retiring keys only)}]}
    bundle.pem     the certificates of every published key: the registry's rootcertbundle
    jwks.json      the same keys as a JWKS under their libtrust kids (registry 3.x `jwks:`)
    .keyring.lock  taken (flock) by every writer, so concurrent admin commands serialize
A whole ring can also be installed from another keys directory's files (`keys sync`; see
app.keys.mirror, which reads them). Every write goes to a temporary file first and is renamed
into place: a reader sees the old ring or the new one, never half of one. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.atomic import check_root_may_write, locked, read_regular, write_atomic
from app.errors import KeyStoreError, RotationRefusedError
from app.keys import ring
from app.keys.certs import DEFAULT_CERT_DAYS, new_private_key, self_signed
from app.keys.jwks import jwks_document
from app.keys.kid import libtrust_kid
from app.keys.model import (
    Algorithm,
    KeyRing,
    KeyState,
    PrivateKey,
    SigningKey,
    algorithm_for,
    check_pair,
)
from app.keys.ring import Entries, RingEntry

RING_FILE = "keyring.json"
BUNDLE_FILE = "bundle.pem"
JWKS_FILE = "jwks.json"
LOCK_FILE = ".keyring.lock"
KEY_FILE = re.compile(rf"{ring.FILE_ID.pattern}\.(?:key|crt)")
RING_FILES = (RING_FILE, BUNDLE_FILE, JWKS_FILE)  # besides each key's KEY_FILEs
_LOAD_ATTEMPTS = 3

Clock = Callable[[], datetime]
Change = Callable[[Entries], Entries]


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
    """Create a key in keys_dir with the given state, add it to the ring, rewrite the bundle.

    A new active key demotes the previous active key to retiring (it stays published): that is
    an immediate rotation, for a first key or an emergency. `add_key` + `promote` is the safe way.
    A key whose private key or certificate file is gone leaves the ring then (`lost_keys`
    names them): no instance could load the ring with it, and that loss is what the emergency
    is about.
    """
    now = clock()
    private_key, entry = _new_entry(algorithm, days, now)

    def install(entries: Entries) -> Entries:
        if state is KeyState.NEXT:
            return ring.add(entries, entry)
        return ring.install_active(entries, entry, now)

    update_ring(
        keys_dir,
        install,
        new_key=(entry.id, private_key, entry.certificate),
        drop_lost=state is KeyState.ACTIVE,
    )
    return SigningKey(entry.kid, algorithm, state, now, private_key, entry.certificate)


class RecordedKey(NamedTuple):
    """A key as keyring.json records it (no file read), and which of its files are gone."""

    id: str
    kid: str
    state: KeyState
    algorithm: Algorithm
    created: datetime
    missing: tuple[str, ...]  # its file names (`ID.key`, `ID.crt`) that are not files

    def describe_loss(self) -> str:
        return f"{' and '.join(self.missing)} {'are' if len(self.missing) > 1 else 'is'} gone"


def recorded_keys(keys_dir: Path) -> list[RecordedKey]:
    """Every key of keyring.json, lost ones included: what a command may name."""
    return [
        RecordedKey(
            record["id"],
            record["kid"],
            KeyState(record["state"]),
            Algorithm(record["algorithm"]),
            datetime.fromisoformat(record["created"]),
            tuple(name for name in _file_names(record["id"]) if not (keys_dir / name).is_file()),
        )
        for record in _read_ring_file(keys_dir)
    ]


def lost_keys(keys_dir: Path) -> list[RecordedKey]:
    """The keys of the ring whose private key or certificate file is gone: no instance can
    load the ring while they are in it, and only leaving it cures that."""
    if not has_keys(keys_dir):
        return []
    return [key for key in recorded_keys(keys_dir) if key.missing]


def _file_names(file_id: str) -> tuple[str, str]:
    return f"{file_id}.key", f"{file_id}.crt"


def _key_file(keys_dir: Path, file_id: str) -> Path:
    return keys_dir / f"{file_id}.key"


def add_key(
    keys_dir: Path, algorithm: Algorithm, *, days: int = DEFAULT_CERT_DAYS, clock: Clock = _utcnow
) -> RingEntry:
    """A new `next` key: published in bundle.pem, not signing yet. It joins a ring, never
    starts one: a ring of only a `next` key has nothing to sign with."""
    if not has_keys(keys_dir):
        raise KeyStoreError(f"no key ring in {keys_dir}: run `registry-auth keys generate` first")
    private_key, entry = _new_entry(algorithm, days, clock())
    update_ring(
        keys_dir,
        lambda entries: ring.add(entries, entry),
        new_key=(entry.id, private_key, entry.certificate),
    )
    return entry


def update_ring(
    keys_dir: Path,
    change: Change,
    *,
    new_key: tuple[str, PrivateKey, x509.Certificate] | None = None,
    drop_lost: bool = False,
) -> Entries:
    """Apply a pure ring transition under the writers' lock; write key files, ring, bundle.

    The transition runs before anything is written, so a refused step changes nothing. With
    `drop_lost`, the keys whose files are gone (`lost_keys`) leave the ring first; that may not
    leave it without an active key.
    """
    with _writer_lock(keys_dir):
        lost = lost_keys(keys_dir) if drop_lost else []
        dropped = {key.id for key in lost}
        before = read_entries(keys_dir, without=dropped) if has_keys(keys_dir) else ()
        after = change(before)
        _check_lost_active(lost, after)
        if new_key is not None:
            _write_key_files(keys_dir, *new_key)
        _write_ring_file(keys_dir, after)
        _write_bundle_pem(keys_dir, after)
        _write_jwks(keys_dir, after)
        kept = {entry.id for entry in after}
        for gone in {entry.id for entry in before} - kept | dropped:
            _remove_key_files(keys_dir, gone)
    return after


def _check_lost_active(lost: list[RecordedKey], after: Entries) -> None:
    """RotationRefusedError when the active key's files are gone and no other key signs."""
    active = next((key for key in lost if key.state is KeyState.ACTIVE), None)
    if active is not None and not any(e.state is KeyState.ACTIVE for e in after):
        raise RotationRefusedError(
            f"key {active.kid} is the active key and its {active.describe_loss()}: promote "
            "the next key (`registry-auth keys promote KID`, if registries trust it already) or "
            "make a new one that signs at once (`registry-auth keys generate --force`)"
        )


class Installed(NamedTuple):
    """What install_ring_files changed: the ring now in force, files written and removed."""

    key_ring: KeyRing
    written: tuple[str, ...]
    removed: tuple[str, ...]


def install_ring_files(keys_dir: Path, files: Mapping[str, bytes], origin: str) -> Installed | None:
    """Make keys_dir hold the ring in `files` (name -> content, from another keys directory,
    named `origin` in errors): None when it already does.

    The new ring is first loaded as the service loads it, from a scratch directory: one that
    does not load changes nothing. Then new key files go in first, keyring.json last, and the
    files of keys that left the ring after it: a reader sees the old ring or the new one, whole.
    """
    foreign = sorted(n for n in files if n not in RING_FILES and not KEY_FILE.fullmatch(n))
    if foreign or RING_FILE not in files:
        raise KeyStoreError(f"{origin}: not a key ring's files: {sorted(files)}")
    with _writer_lock(keys_dir):
        changed = sorted(
            (n for n, data in files.items() if not _holds(keys_dir / n, data)), key=_order
        )
        present = (path.name for path in keys_dir.iterdir())
        stale = sorted(n for n in present if KEY_FILE.fullmatch(n) and n not in files)
        if not changed and not stale:
            return None
        with tempfile.TemporaryDirectory(dir=keys_dir, prefix=".sync-") as scratch:
            for name, data in files.items():
                _write(Path(scratch, name), data, _file_mode(name))
            try:
                key_ring = load_keyring(Path(scratch))
            except KeyStoreError as exc:
                raise KeyStoreError(str(exc).replace(scratch, origin)) from None
            for name in changed:
                Path(scratch, name).replace(keys_dir / name)
        for name in stale:
            (keys_dir / name).unlink(missing_ok=True)
    return Installed(key_ring, tuple(changed), tuple(stale))


def _holds(path: Path, data: bytes) -> bool:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        return mode == _file_mode(path.name) and read_regular(path, KeyStoreError) == data
    except (OSError, KeyStoreError):  # not there, or not a file: replaced either way
        return False


def _file_mode(name: str) -> int:
    return 0o600 if name.endswith(".key") else 0o644


def _order(name: str) -> int:
    # Key files before the public files, and keyring.json, which the service watches, last.
    return 2 if name == RING_FILE else 0 if KEY_FILE.fullmatch(name) else 1


def read_entries(keys_dir: Path, *, without: Collection[str] = ()) -> Entries:
    """The ring as keyring.json records it, with each certificate (no private keys read), but
    the keys whose ids are in `without`. A certificate of another key than the ring records
    (a mixed restore of a backup) is a KeyStoreError: written into bundle.pem, registries
    would trust it instead of the key that signs."""
    return tuple(
        ring.entry_from_record(record, _recorded_certificate(keys_dir, record))
        for record in _read_ring_file(keys_dir)
        if record["id"] not in without
    )


def _recorded_certificate(keys_dir: Path, record: dict[str, Any]) -> x509.Certificate:
    certificate = _read_certificate(keys_dir, record["id"])
    public_key = certificate.public_key()
    path = keys_dir / f"{record['id']}.crt"
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise KeyStoreError(f"{path}: only RSA and EC P-256 keys can sign registry tokens")
    kid = libtrust_kid(public_key)
    if kid != record["kid"]:
        raise KeyStoreError(f"{path}: holds key {kid}, {RING_FILE} says {record['kid']}")
    return certificate


def load_keyring(keys_dir: Path) -> KeyRing:
    """Read and check every key of the ring. KeyStoreError says what is wrong and what to do.

    A writer may replace the ring and delete a retired key's files while this reads: when a
    read fails and keyring.json changed meanwhile, read the new ring instead.
    """
    if not has_keys(keys_dir):
        raise KeyStoreError(_no_ring(keys_dir))
    for attempt in range(_LOAD_ATTEMPTS):
        seen = ring_identity(keys_dir)
        try:
            return _load_keyring_once(keys_dir)
        except KeyStoreError:
            if attempt == _LOAD_ATTEMPTS - 1 or ring_identity(keys_dir) == seen:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def ring_files(keys_dir: Path) -> list[Path]:
    """What a running service watches to follow the ring: keyring.json, and every key and
    certificate file, so that a chmod or chown fixing a file it could not read (a reload
    that failed) makes it load the ring again."""
    try:
        found = [p for p in keys_dir.iterdir() if p.suffix in (".key", ".crt")]
    except OSError:
        found = []
    return [keys_dir / RING_FILE, *sorted(found)]


def has_keys(keys_dir: Path) -> bool:
    """Whether keyring.json is there, in any form: one that is not a regular file (a FIFO, a
    directory) is then refused by its read, not taken for no ring (which `keys generate`
    would make, and leave its key files behind when the ring cannot be written)."""
    return (keys_dir / RING_FILE).exists()


def _no_ring(keys_dir: Path) -> str:
    """Why there is no ring, and, only where that is the likely cure, how to make one (a ring
    gone from under a running service is restored from its copy, not generated anew: the
    registries trust only the old keys)."""
    if keys_dir.is_file():
        return f"{keys_dir} is a file, not a keys directory"
    where = f"holds no {RING_FILE}" if keys_dir.is_dir() else "does not exist"
    return (
        f"no signing key: {keys_dir} {where} (for a new service: `registry-auth keys generate "
        f"--keys-dir {keys_dir}`)"
    )


def write_bundle(keys_dir: Path, key_ring: KeyRing) -> Path:
    """Rewrite bundle.pem with the certificate of every published key."""
    path = keys_dir / BUNDLE_FILE
    pem = "".join(key.certificate_pem for key in key_ring.published)
    _write(path, pem.encode("ascii"), 0o644)
    return path


def bundle_path(keys_dir: Path) -> Path:
    return keys_dir / BUNDLE_FILE


def write_public_file(path: Path, text: str) -> Path:
    """Write a public document (a JWKS) atomically, readable by the registry."""
    _write(path, text.encode("utf-8"), 0o644)
    return path


def _new_entry(algorithm: Algorithm, days: int, now: datetime) -> tuple[PrivateKey, RingEntry]:
    private_key = new_private_key(algorithm)
    certificate = self_signed(private_key, now, days)
    kid = check_pair(private_key, certificate)
    file_id = kid.replace(":", "")[:16].lower()
    entry = RingEntry(file_id, kid, algorithm, KeyState.NEXT, now, certificate)
    return private_key, entry


def check_keys(keys_dir: Path, *, without: Collection[str] = ()) -> None:
    """KeyStoreError for the first key (but those in `without`) the service could not load:
    what a ring that is about to lose its lost keys must still pass."""
    for record in _read_ring_file(keys_dir):
        if record["id"] not in without:
            _load_entry(keys_dir, record)


def _load_keyring_once(keys_dir: Path) -> KeyRing:
    keys = tuple(_load_entry(keys_dir, entry) for entry in _read_ring_file(keys_dir))
    actives = [key.kid for key in keys if key.state is KeyState.ACTIVE]
    if len(actives) != 1:
        raise KeyStoreError(f"{keys_dir / RING_FILE}: {len(actives)} active keys, exactly 1 needed")
    return KeyRing(keys)


def ring_identity(keys_dir: Path) -> tuple[int, int] | None:
    """keyring.json's (inode, mtime): a reader compares it before and after reading the ring."""
    try:
        st = (keys_dir / RING_FILE).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


@contextlib.contextmanager
def _writer_lock(keys_dir: Path) -> Iterator[None]:
    """Make keys_dir (0700) if it is missing and hold its lock file; KeyStoreError if it
    cannot."""
    check_root_may_write(keys_dir / LOCK_FILE, KeyStoreError)
    try:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise KeyStoreError(f"keys directory {keys_dir}: not a directory") from None
    except OSError as exc:
        raise KeyStoreError(f"cannot write in keys directory {keys_dir}: {exc.strerror}") from None
    with locked(keys_dir / LOCK_FILE, KeyStoreError):
        yield


def _write(path: Path, data: bytes, mode: int) -> None:
    write_atomic(path, data, mode=mode, error=KeyStoreError)


def _write_key_files(
    keys_dir: Path, file_id: str, private_key: PrivateKey, certificate: x509.Certificate
) -> None:
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(keys_dir / f"{file_id}.key", key_pem, 0o600)
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    _write(keys_dir / f"{file_id}.crt", cert_pem, 0o644)


def _remove_key_files(keys_dir: Path, file_id: str) -> None:
    for suffix in (".key", ".crt"):
        with contextlib.suppress(FileNotFoundError):
            (keys_dir / f"{file_id}{suffix}").unlink()


def _write_bundle_pem(keys_dir: Path, entries: Entries) -> None:
    pem = b"".join(
        entry.certificate.public_bytes(serialization.Encoding.PEM)
        for entry in ring.published(entries)
    )
    _write(keys_dir / BUNDLE_FILE, pem, 0o644)


def _write_jwks(keys_dir: Path, entries: Entries) -> None:
    # Kept next to bundle.pem so that registry 3.x (`jwks:`) ships with the same step.
    document = jwks_document(entry.certificate for entry in ring.published(entries))
    write_public_file(keys_dir / JWKS_FILE, json.dumps(document, indent=2) + "\n")


def _read_certificate(keys_dir: Path, file_id: str) -> x509.Certificate:
    path = keys_dir / f"{file_id}.crt"
    try:
        return x509.load_pem_x509_certificate(read_regular(path, KeyStoreError))
    except OSError as exc:
        raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise KeyStoreError(f"{path} is not a valid PEM certificate") from None


def _load_entry(keys_dir: Path, entry: dict[str, Any]) -> SigningKey:
    key_path = _key_file(keys_dir, entry["id"])
    _check_private(key_path)
    try:
        data = read_regular(key_path, KeyStoreError)
        loaded = serialization.load_pem_private_key(data, password=None)
    except OSError as exc:
        raise KeyStoreError(f"cannot read {key_path}: {exc.strerror}") from None
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise KeyStoreError(
            f"{key_path} is encrypted (a passphrase protects it), and the service cannot ask "
            f"for one: store it decrypted, mode 0600 (`openssl pkey -in {key_path} -out "
            "DECRYPTED`), on a disk only the service's user can read"
        ) from None
    except ValueError:
        raise KeyStoreError(f"{key_path} is not a valid PEM private key") from None
    certificate = _read_certificate(keys_dir, entry["id"])
    if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyStoreError(f"{key_path}: only RSA and EC P-256 keys can sign registry tokens")
    try:
        algorithm = algorithm_for(loaded)
        kid = check_pair(loaded, certificate)
    except KeyStoreError as exc:  # name the files: a ring holds several
        raise KeyStoreError(f"{key_path}: {exc}") from None
    if kid != entry["kid"]:
        raise KeyStoreError(f"{key_path}: holds key {kid}, {RING_FILE} says {entry['kid']}")
    created = datetime.fromisoformat(entry["created"])
    return SigningKey(kid, algorithm, KeyState(entry["state"]), created, loaded, certificate)


def _check_private(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise KeyStoreError(f"{path} is not a file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            f"{path} is readable by group or others (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`"
        )


def _read_ring_file(keys_dir: Path) -> list[dict[str, Any]]:
    path = keys_dir / RING_FILE
    try:
        records = json.loads(read_regular(path, KeyStoreError).decode("utf-8"))["keys"]
        for record in records:
            ring.check_record(record)
    except OSError as exc:
        raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise KeyStoreError(
            f"{path} is damaged: not a key ring written by registry-auth (restore the keys "
            "directory from its backup, or the Secret it is copied from)"
        ) from None
    return list(records)


def _write_ring_file(keys_dir: Path, entries: Entries) -> None:
    records = [ring.entry_record(entry) for entry in entries]
    text = json.dumps({"version": 1, "keys": records}, indent=2) + "\n"
    _write(keys_dir / RING_FILE, text.encode("utf-8"), 0o644)
