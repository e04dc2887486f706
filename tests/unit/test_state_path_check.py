"""What `serve` checks of `state.path` before it starts: a path the SQLite store could not use
started all the same, with refresh tokens off and login counters in memory, said only in a
warning at each login."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from app.state.model import RefreshRecord
from app.state.sqlite import SqliteStore, unwritable_because


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    assert unwritable_because(tmp_path / "keys") == f"{tmp_path / 'keys'} is not a file"


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "users.htpasswd"
    users.write_text("alice:$2b$10$...\n")
    assert unwritable_because(users) == f"{users} is not an SQLite database (another file?)"


def test_a_database_an_empty_file_or_none_yet_is_fine(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    sqlite3.connect(database).execute("CREATE TABLE t (x)").connection.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    assert unwritable_because(database) is None
    assert unwritable_because(empty) is None
    assert unwritable_because(tmp_path / "new.db") is None


def test_a_missing_directory_is_refused_not_made(tmp_path: Path) -> None:
    """A mistyped directory was made, with its parents, at the first failed login."""
    missing = tmp_path / "new" / "state.db"
    assert unwritable_because(missing) == f"its directory {missing.parent} does not exist"


_OTHER_PROCESS = """
import sys
from pathlib import Path
from app.state.model import RefreshRecord
from app.state.sqlite import SqliteStore
store = SqliteStore(Path(sys.argv[1]))
store.add(RefreshRecord("id2", "hash2", "bob", "s", "c", "v", 1, 2, 1))
store.close()  # its last connection: SQLite checkpoints, and deletes -wal and -shm if it may
"""


def test_checking_a_file_this_process_uses_keeps_its_locks(tmp_path: Path) -> None:
    """The check ran on every /readyz and read the file's header: closing that descriptor
    dropped this process's SQLite locks. Another process closing its last connection then
    deleted the -wal and -shm files under the server's connections, which never saw a later
    write again: a `tokens revoke` or a `logins reset` no longer reached the server."""
    path = tmp_path / "state.db"
    here = SqliteStore(path)
    here.add(RefreshRecord("id1", "hash1", "alice", "s", "c", "v", 1, 2, 1))
    assert here.find("hash1") is not None  # this thread's read connection, kept open
    assert unwritable_because(path) is None
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(path)], check=True, timeout=60)
    assert (tmp_path / "state.db-shm").exists()  # still in use here: not deleted
    found = here.find("hash2")
    assert found is not None
    assert found.account == "bob"
    here.close()
