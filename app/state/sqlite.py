"""The embedded store: one SQLite file, safe for several worker processes on one machine.

WAL mode lets readers run beside the one writer, and `busy_timeout` makes a writer wait for
another process's lock instead of failing. Writes open a connection per call; the reads made
for every login and refresh grant (the failure counters, a refresh token's record) go through
one connection kept per thread and process (a connection must not cross threads or a fork),
which also remembers the counters it has read until the file changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field
from pathlib import Path

from app.atomic import check_root_may_write
from app.errors import StateStoreError
from app.state.attempts import FailureCount
from app.state.model import RefreshRecord

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 10.0
# Counters a read connection remembers (hashed keys, ~200 bytes each); past this it starts over.
KEPT_COUNTERS = 10_000
# A reader waits only while a crashed writer's log is recovered: rare, and on the event loop.
READ_TIMEOUT_SECONDS = 0.5
# How long a login's read on the event loop (failures_now) trusts the counters its connection
# last found current, before it asks the file again whether another process changed them.
# Asking (`PRAGMA data_version`, behind a stat of the path and a lock and unlock of the WAL's
# shared memory) cost ~60 us of a fresh token's ~640 in the service, with two workers taking
# those locks on the same file (docs/performance.md). This process's own writes count at once.
RECHECK_SECONDS = 0.02
# The file each path held when last seen by a store of this process (the refresh tokens' and
# the login counters' see the same file): a deletion or a replacement is logged once, and the
# file one store makes anew is not then "replaced" for the other.
_SEEN_FILES: dict[Path, tuple[int, int] | None] = {}
_SEEN_LOCK = threading.Lock()


def _first_to_see(path: Path, identity: tuple[int, int] | None) -> bool:
    """Record that `path` holds `identity` (None: nothing); whether that was news."""
    with _SEEN_LOCK:
        news = _SEEN_FILES.get(path, identity) != identity
        _SEEN_FILES[path] = identity
        return news


_LOCK_ERRORS = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_COLUMNS = (
    "id, token_hash, account, service, client_id, credential_version, "
    "created_at, expires_at, last_used_at"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id TEXT NOT NULL UNIQUE,
    token_hash TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    service TEXT NOT NULL,
    client_id TEXT NOT NULL,
    credential_version TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_account ON refresh_tokens (account);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    last_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_last_at ON login_failures (last_at);
"""
# One failure: a counter idle longer than the window (the 3rd parameter) starts again at 1.
_ADD_FAILURE = """
INSERT INTO login_failures (key, count, last_at) VALUES (?, 1, ?)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN excluded.last_at - last_at > ? THEN 1 ELSE count + 1 END,
    last_at = excluded.last_at
"""


@dataclass(eq=False)
class _Reader:
    """A thread's read connection and the counters read through it at `version`: the file's
    `PRAGMA data_version`, which changes whenever any other connection commits (every write
    goes through one), so they are the file's current rows for as long as it stays the same."""

    pid: int
    db: sqlite3.Connection
    version: int = -1
    counters: dict[str, FailureCount | None] = field(default_factory=dict)
    # Until when (monotonic) `counters` may be answered without asking the file, and the
    # store's count of this process's own writes when they were last found current.
    trusted_until: float = float("-inf")
    writes: int = -1


def unwritable_because(path: Path) -> str | None:
    """Why this process could not create or write the state file (and SQLite its -wal and
    -shm files beside it); None when it can. For the start: the store itself fails open (a
    failure not counted, no refresh token) and says so only when a login needs it."""
    if not path.parent.is_dir():  # a mistyped directory, not a new tree for the store
        return f"its directory {path.parent} does not exist"
    where = path if path.exists() else path.parent
    if where == path and not path.is_file():
        return f"{path} is not a file"
    if where == path and not os.access(path, os.W_OK):
        return _why_not(path)
    if where == path and not _is_sqlite(path):
        return f"{path} is not an SQLite database (another file?)"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return _why_not(path.parent)
    return None


# The state files this process has opened SQLite connections to. Such a file is never opened
# here by other means: closing any descriptor of a file drops every POSIX lock the process
# holds on it, SQLite's own included (sqlite.org/howtocorrupt.html, 2.2). A header read from
# /readyz did that: another process closing its last connection then took itself for the last
# user, checkpointed and deleted the -wal and -shm files, and this process's connections went
# on with the deleted ones; `tokens revoke` and `logins reset` no longer reached them.
_CONNECTED: set[str] = set()


def _sqlite_connect(path: Path, timeout: float, **options: bool) -> sqlite3.Connection:
    _CONNECTED.add(os.path.abspath(path))  # noqa: PTH100 - as the check below spells it
    return sqlite3.connect(path, timeout=timeout, isolation_level=None, **options)


def _is_sqlite(path: Path) -> bool:
    """An empty file (SQLite makes its database there), or one with SQLite's header; not
    looked at (True) once this process has connected to it (see _CONNECTED)."""
    if os.path.abspath(path) in _CONNECTED:  # noqa: PTH100
        return True
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError:
        return True  # unreadable: the store's open says why
    return head in (b"", b"SQLite format 3\x00")


def _why_not(place: Path) -> str:
    # os.access says EROFS too: a directory systemd's ProtectSystem= or a container made
    # read-only, where even root cannot write.
    if _read_only(place):
        return f"{place} is on a read-only file system"
    return f"{place} is not writable by this user"


def _read_only(place: Path) -> bool:
    try:
        return bool(os.statvfs(place).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class SqliteStore:
    """Refresh records and login-failure counters in a SQLite file, created (mode 0600) with
    the first record or failure.

    Until then reads find nothing, so a service that never issues a refresh token leaves no
    file behind.
    """

    local_reads = True  # find: one indexed read through this thread's kept connection

    def __init__(self, path: Path, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._monotonic = monotonic
        # This process's writes to the counters, counted after each commit: a reader that
        # finds the count changed asks the file again (see failures_now).
        self._writes = 0
        self._created = False
        self._identity: tuple[int, int] | None = None  # (device, inode) of the prepared file
        # What a read last found at the path (the prepared file, or none: a server nobody
        # ever failed a login on has none), and until when (monotonic) it trusts that.
        self._looked: tuple[float, bool] = (float("-inf"), False)
        self._create_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[_Reader] = []

    def _create(self) -> None:
        if self._created and self._same_file():
            return
        with self._create_lock:  # threads of this process create the file once
            if self._created:
                return
            check_root_may_write(self.path, StateStoreError)  # and its -wal, -shm files
            try:
                if not self.path.exists():
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StateStoreError(
                    f"cannot create state file {self.path}: {exc.strerror}"
                ) from None
            self._prepare()
            st = self.path.stat()
            self._identity = (st.st_dev, st.st_ino)
            _first_to_see(self.path, self._identity)
            self._created = True
            self._looked = (self._monotonic() + RECHECK_SECONDS, True)

    def _same_file(self) -> bool:
        """Whether the file at the path is still the one prepared: one deleted or replaced (a
        reset, a restore from backup) is prepared again and read afresh. Before, the kept read
        connections went on reading the deleted file (its refresh tokens still worked, `tokens
        revoke` found none) while writes went to a new, empty file without tables."""
        try:
            st = self.path.stat()
        except OSError:
            identity = None
        else:
            identity = (st.st_dev, st.st_ino)
        if identity == self._identity:
            self._looked = (self._monotonic() + RECHECK_SECONDS, True)
            return True
        if _first_to_see(self.path, identity):
            log.warning(
                "state file %s was %s: %s",
                self.path,
                "deleted" if identity is None else "replaced",
                "a new one is made; the refresh tokens and login counters in the old one are gone"
                if identity is None
                else "the refresh tokens and login counters in force are the new file's",
            )
        with self._create_lock:
            self._created, self._identity = False, None
        self.close()
        return False

    def _prepare(self) -> None:
        """Switch the file to WAL and create the schema.

        Other processes may be doing the same right now. Switching the journal mode and a
        schema change can meet a lock that SQLite reports at once rather than waiting for
        (to avoid a deadlock), so this step retries until `BUSY_TIMEOUT_SECONDS` runs out.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        pause = 0.005
        while not self._try_prepare():
            if time.monotonic() + pause > deadline:
                raise StateStoreError(f"state file {self.path}: database is locked")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _try_prepare(self) -> bool:
        """One attempt; False when another connection held the lock."""
        try:
            with contextlib.closing(_sqlite_connect(self.path, BUSY_TIMEOUT_SECONDS)) as db:
                # WAL is a property of the file: set once, every later connection uses it.
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode & 0xFF in _LOCK_ERRORS:
                return False
            raise StateStoreError(f"state file {self.path}: {exc}") from None
        return True

    def _still_there(self) -> bool:
        """`_exists` for a read (every login's counters, every refresh grant's record): what a
        read found at the path less than RECHECK_SECONDS ago stands, while this process has
        not itself made or lost the file since. Looking each time (a stat) cost ~12% of the
        refresh grants answered, and ~7% of the fresh tokens while there was no file (paired
        runs, docs/performance.md). So another process's new file, or a file deleted or
        replaced, is noticed within RECHECK_SECONDS; writes still look every time."""
        until, there = self._looked
        if there == self._created and until > self._monotonic():
            return there
        there = self._exists()
        self._looked = (self._monotonic() + RECHECK_SECONDS, there)
        return there

    def _exists(self) -> bool:
        if self._created and self._same_file():
            return True
        if os.path.exists(self.path):  # noqa: PTH110 - a third of the cost
            self._create()  # an older file (or one put in place): make sure of the schema
        return self._created

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = _sqlite_connect(self.path, BUSY_TIMEOUT_SECONDS)
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open state file {self.path}: {exc}") from None
        try:
            with db:
                yield db
        except sqlite3.Error as exc:
            raise StateStoreError(f"state file {self.path}: {exc}") from None
        finally:
            db.close()

    def add(self, record: RefreshRecord) -> None:
        self._create()
        with self._connect() as db:
            db.execute(
                f"INSERT INTO refresh_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant columns
                astuple(record),
            )

    def find(self, token_hash: str) -> RefreshRecord | None:
        if not self._still_there():
            return None
        # Through this thread's kept read connection: opening one per refresh grant cost more
        # than the query.
        try:
            db = self._reader().db
            row = db.execute(
                f"SELECT {_COLUMNS} FROM refresh_tokens WHERE token_hash = ?",  # noqa: S608 - constant columns
                (token_hash,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StateStoreError(f"state file {self.path}: {exc}") from None
        return None if row is None else RefreshRecord(*row)

    def touch(self, token_hash: str, last_used_at: int) -> None:
        if not self._exists():
            return
        with self._connect() as db:
            db.execute(
                "UPDATE refresh_tokens SET last_used_at = ? WHERE token_hash = ?",
                (last_used_at, token_hash),
            )

    def records(self, account: str | None = None) -> list[RefreshRecord]:
        if not self._exists():
            return []
        query = f"SELECT {_COLUMNS} FROM refresh_tokens"  # noqa: S608 - constant columns
        args: tuple[str, ...] = ()
        if account is not None:
            query, args = query + " WHERE account = ?", (account,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_at, id", args).fetchall()
        return [RefreshRecord(*row) for row in rows]

    def account_records(self, account: str) -> list[RefreshRecord]:
        return self.records(account)  # an indexed query

    def delete(self, token_hashes: list[str]) -> int:
        if not self._exists():
            return 0
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            count = 0
            for token_hash in token_hashes:
                cursor = db.execute(
                    "DELETE FROM refresh_tokens WHERE token_hash = ?", (token_hash,)
                )
                count += cursor.rowcount
            db.execute("COMMIT")
        return count

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        writes = self._writes  # before the question: a write landing meanwhile is not missed
        if not self._still_there():
            return {}
        try:
            reader = self._reader()
            (version,) = reader.db.execute("PRAGMA data_version").fetchone()
            if version != reader.version:
                reader.version, reader.counters = version, {}
            reader.trusted_until, reader.writes = self._monotonic() + RECHECK_SECONDS, writes
            known = reader.counters
            missing = [key for key in keys if key not in known]
            if missing:
                if len(known) + len(missing) > KEPT_COUNTERS:
                    known.clear()
                    missing = keys
                _read_counters(reader.db, missing, known)
        except sqlite3.Error as exc:
            raise StateStoreError(f"state file {self.path}: {exc}") from None
        return _live(known, keys, now - window)

    def failures_now(
        self, keys: list[str], now: float, window: int
    ) -> dict[str, FailureCount] | None:
        """Always at once, on the event loop: through a connection kept open per thread, in WAL
        mode, a read takes microseconds and never waits for a writer; and while nothing has
        changed, only `PRAGMA data_version` runs (a fifth of an indexed SELECT). Within
        RECHECK_SECONDS of that question, and while this process wrote no counter, not even
        that: another process's failures and resets (the other workers', `logins reset`)
        count within RECHECK_SECONDS, this process's own at once."""
        kept: _Reader | None = getattr(self._local, "reader", None)
        if (
            kept is not None
            and kept.writes == self._writes
            and kept.trusted_until > self._monotonic()
        ):
            # Only what the connection read, never the connection itself: one inherited
            # across a fork is not used (failures opens this process's own).
            known = kept.counters
            if all(key in known for key in keys):
                return _live(known, keys, now - window)
        return self.failures(keys, now, window)

    def _reader(self) -> _Reader:
        """This thread's read connection, opened on first use (again after a fork: a
        connection must not cross into a child process)."""
        kept: _Reader | None = getattr(self._local, "reader", None)
        if kept is not None and kept.pid == os.getpid():
            return kept
        try:
            db = _sqlite_connect(
                self.path,
                READ_TIMEOUT_SECONDS,
                check_same_thread=False,  # only close() touches it from elsewhere
            )
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open state file {self.path}: {exc}") from None
        self._local.reader = reader = _Reader(os.getpid(), db)
        with self._create_lock:
            self._readers.append(reader)
        return reader

    def add_failure(self, keys: list[str], now: float, window: int) -> None:
        self._create()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            for key in keys:
                db.execute(_ADD_FAILURE, (key, now, window))
            # Forget counters idle past the window, so the table stays small.
            db.execute("DELETE FROM login_failures WHERE last_at < ?", (now - window,))
            db.execute("COMMIT")
        self._writes += 1

    def reset(self, key: str) -> None:
        if not self._exists():
            return
        with self._connect() as db:
            db.execute("DELETE FROM login_failures WHERE key = ?", (key,))
        self._writes += 1

    def close(self) -> None:
        """Close the read connections; writes hold nothing open between calls."""
        with self._create_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            if reader.pid == os.getpid():  # a parent's connection is the parent's to close
                reader.db.close()
        self._local = threading.local()


def _live(
    known: dict[str, FailureCount | None], keys: list[str], since: float
) -> dict[str, FailureCount]:
    """The counters of `keys` with a failure at or after `since` (the window's start)."""
    return {
        key: counter
        for key in keys
        if (counter := known[key]) is not None and counter.last_at >= since
    }


def _read_counters(
    db: sqlite3.Connection, keys: list[str], known: dict[str, FailureCount | None]
) -> None:
    """Add the rows of `keys` (None: no row) to `known`."""
    marks = ", ".join("?" * len(keys))
    rows = db.execute(
        f"SELECT key, count, last_at FROM login_failures WHERE key IN ({marks})",  # noqa: S608 - only placeholders
        keys,
    ).fetchall()
    known.update(dict.fromkeys(keys))
    known.update((key, FailureCount(count, last_at)) for key, count, last_at in rows)
