"""What `serve` checks of `state.path` before it starts: a path the SQLite store could not use
started all the same, with refresh tokens off and login counters in memory, said only in a
warning at each login."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.state.sqlite import unwritable_because


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
