"""Apache htpasswd files of bcrypt entries (`htpasswd -B`): parsing and password checks.

bcrypt costs ~60 ms of CPU at cost 10, so checks run in worker threads (bcrypt releases the
GIL) and never on the event loop. An unknown account is checked against a dummy hash of the
same cost, so it takes as long as a wrong password.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import bcrypt

from app.authn.base import AccountState, AuthResult, Credentials, Outcome
from app.backend_settings import ROBOT_PREFIX
from app.errors import UserStoreError
from app.pools import WorkerPool

log = logging.getLogger(__name__)

BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; htpasswd -B truncates there too
_BCRYPT = re.compile(rb"\$2[aby]\$(?P<cost>[0-9]{2})\$(?P<salt>[./A-Za-z0-9]{22})[./A-Za-z0-9]{31}")
# What the bcrypt library takes: a cost of 4-31, and a salt of 16 bytes whose 22nd character
# carries only their last 2 bits (one of these four). Other hashes it refuses at each check.
_COSTS = range(4, 32)
_SALT_ENDS = b".Oeu"
_ACCOUNT_FORBIDDEN = re.compile(r"[:\s]")


@dataclass(frozen=True, slots=True)
class HtpasswdUsers:
    """The parsed file: account -> bcrypt hash. The repr shows accounts, never hashes."""

    path: Path
    hashes: dict[str, bytes] = field(repr=False)
    dummy_hash: bytes = field(repr=False)


BOM = "\ufeff"


def parse_htpasswd(text: str, path: Path) -> dict[str, bytes]:
    """account -> hash; any line that is not `account:bcrypt-hash` is an error naming its line.
    A byte-order mark (an editor on Windows) is not part of the first account's name: kept, it
    locked that account out while `users list` showed it as it was."""
    hashes: dict[str, bytes] = {}
    for number, line in enumerate(text.removeprefix(BOM).splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        account, sep, hashed = stripped.partition(":")
        where = f"{path}:{number}"
        if not sep or not account:
            raise UserStoreError(f"{where}: not an `account:hash` line")
        problem = bcrypt_problem(hashed)
        if problem is not None:
            raise UserStoreError(
                f"{where}: account {account!r}: {problem}; "
                "re-create it with `registry-auth users add` or `htpasswd -B`"
            )
        if account in hashes:
            raise UserStoreError(f"{where}: account {account!r} appears twice")
        hashes[account] = hashed.encode("ascii")
    return hashes


def load_htpasswd(path: Path) -> HtpasswdUsers:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserStoreError(f"cannot read htpasswd file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserStoreError(f"htpasswd file {path} is not UTF-8 text") from None
    hashes = parse_htpasswd(text, path)
    warn_robot_names(hashes, path)
    return HtpasswdUsers(path, hashes, _dummy_hash(hashes))


def warn_robot_names(accounts: Iterable[str], path: Path) -> None:
    """`robot$` accounts in a users file can never log in: the chain sends such names to the
    robots store alone (app.authn.chain). Said at each load rather than refused, so a file that
    loads today keeps loading; `users add` refuses to write such a name."""
    robots = sorted(account for account in accounts if account.startswith(ROBOT_PREFIX))
    if robots:
        log.warning(
            "%s: %s can never log in: robot accounts live in the robots file "
            "(`registry-auth robots create`)",
            path,
            ", ".join(robots),
        )


def _dummy_hash(hashes: dict[str, bytes]) -> bytes:
    costs = sorted(int(h[4:6]) for h in hashes.values()) or [10]
    median = costs[len(costs) // 2]
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=median))


def check_password(password: str, hashed: bytes) -> bool:
    """Blocking bcrypt check; passwords past 72 bytes compare on what bcrypt hashes."""
    candidate = password.encode("utf-8", "surrogateescape")[:BCRYPT_MAX_BYTES]
    return bcrypt.checkpw(candidate, hashed)


def credential_version(hashed: bytes) -> str:
    """A fingerprint of an account's htpasswd entry: changes with the password (a new bcrypt
    salt each time), reveals nothing usable (SHA-256 of a salted hash cannot be tested against
    password guesses without the salt)."""
    return hashlib.sha256(b"htpasswd-entry\0" + hashed).hexdigest()[:32]


def hash_password(password: str, *, rounds: int = 10) -> str:
    encoded = password.encode("utf-8")
    if len(encoded) > BCRYPT_MAX_BYTES:
        raise UserStoreError(
            f"password longer than {BCRYPT_MAX_BYTES} bytes: bcrypt ignores the rest"
        )
    return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds=rounds)).decode("ascii")


MAX_ACCOUNT_LENGTH = 255  # a longer name could never log in (the request's bounds)


def validate_account(account: str) -> str:
    if not account:
        raise UserStoreError("the account name is empty")
    if _ACCOUNT_FORBIDDEN.search(account) or not account.isprintable():
        raise UserStoreError(
            f"invalid account name {account!r}: no ':', spaces or control characters"
        )
    return account


async def run_check(pool: WorkerPool | None, password: str, hashed: bytes) -> bool:
    """The bcrypt check in the password pool (or anyio's threads when there is none)."""
    if pool is None:
        return await anyio.to_thread.run_sync(check_password, password, hashed)
    return await pool.run(check_password, password, hashed)


class HtpasswdAuthenticator:
    """Checks credentials against the current htpasswd users (`users` is called per request)."""

    def __init__(self, users: Callable[[], HtpasswdUsers], pool: WorkerPool | None = None) -> None:
        self._users = users
        self._pool = pool
        # Whether a password file after this one in the chain answers for a name: that one
        # then pays the check an unknown name costs, not both (set by app.authn.build).
        self.others_after: Callable[[str], bool] = lambda _: False

    def cache_version(self, account: str) -> bytes | None:
        """The account's current entry (its hash): a credential cache keyed on it misses as
        soon as the password changes or the account goes. None for an unknown account."""
        return self._users().hashes.get(account)

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        users = self._users()  # one consistent snapshot even if a reload swaps it meanwhile
        hashed = users.hashes.get(credentials.account)
        if hashed is None and self.others_after(credentials.account):
            return AuthResult(Outcome.NOT_MINE)
        password = credentials.password.get_secret_value()
        ok = await run_check(self._pool, password, hashed or users.dummy_hash)
        if hashed is None:
            return AuthResult(Outcome.NOT_MINE)
        if not ok:
            return AuthResult(Outcome.REJECTED)
        return AuthResult(
            Outcome.ACCEPTED, credentials.account, credential_version=credential_version(hashed)
        )

    async def account_state(self, account: str) -> AccountState | None:
        hashed = self._users().hashes.get(account)
        return None if hashed is None else AccountState(credential_version(hashed))


def bcrypt_problem(hashed: str) -> str | None:
    """What keeps `hashed` from being a `$2a$`/`$2b$`/`$2y$` bcrypt hash the bcrypt library
    checks (what every password file here must hold), or None. A cost such as 99 passed a
    check of the shape alone: the file loaded, and every login of that account was a 503
    (the library refuses it), or the start a traceback."""
    match = _BCRYPT.fullmatch(hashed.encode("ascii", "replace"))
    if match is None:
        return "does not use bcrypt ($2y$/$2b$/$2a$)"
    if int(match["cost"]) not in _COSTS:
        return f"bcrypt cost {int(match['cost'])} is outside 4-31"
    if match["salt"][-1] not in _SALT_ENDS:
        return "the bcrypt hash's salt is malformed"
    return None


def dummy_hash(hashes: dict[str, bytes]) -> bytes:
    """A hash of a random password at the median cost, checked for unknown accounts."""
    return _dummy_hash(hashes)
