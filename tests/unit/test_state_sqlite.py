"""The refresh-token store contract, run here on SQLite (and on real etcd in integration)."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from app.errors import StateStoreError
from app.state import sqlite
from app.state.model import RefreshRecord, RefreshTokenStore
from app.state.refresh import RefreshPolicy, RefreshTokens, hash_token
from app.state.sqlite import SqliteStore


def record(n: int, account: str = "alice", created_at: int = 1000) -> RefreshRecord:
    return RefreshRecord(
        id=f"id{n:04d}",
        token_hash=hash_token(f"token-{n}"),
        account=account,
        service="registry.test",
        client_id="docker",
        credential_version="v1",
        created_at=created_at + n,
        expires_at=created_at + n + 100,
        last_used_at=created_at + n,
    )


class StoreContract:
    """What every RefreshTokenStore must do; subclasses provide the `store` fixture."""

    def test_add_then_find_by_hash(self, store: RefreshTokenStore) -> None:
        store.add(record(1))
        assert store.find(hash_token("token-1")) == record(1)
        assert store.find(hash_token("token-2")) is None

    def test_records_are_listed_oldest_first_and_by_account(self, store: RefreshTokenStore) -> None:
        for n, account in ((3, "bob"), (1, "alice"), (2, "alice")):
            store.add(record(n, account))
        assert [r.id for r in store.records()] == ["id0001", "id0002", "id0003"]
        assert [r.id for r in store.records("alice")] == ["id0001", "id0002"]
        assert store.records("carol") == []

    def test_an_accounts_records_alone_and_after_deletes(self, store: RefreshTokenStore) -> None:
        for n, account in ((3, "bob"), (1, "alice"), (2, "alice"), (4, "alice")):
            store.add(record(n, account))
        assert [r.id for r in store.account_records("alice")] == ["id0001", "id0002", "id0004"]
        assert store.delete([hash_token("token-2"), hash_token("token-3")]) == 2
        assert [r.id for r in store.account_records("alice")] == ["id0001", "id0004"]
        assert store.account_records("bob") == []
        assert [r.id for r in store.records()] == ["id0001", "id0004"]

    def test_touch_records_the_last_use(self, store: RefreshTokenStore) -> None:
        store.add(record(1))
        store.touch(hash_token("token-1"), 5000)
        found = store.find(hash_token("token-1"))
        assert found is not None
        assert found.last_used_at == 5000

    def test_touch_never_brings_back_a_deleted_record(self, store: RefreshTokenStore) -> None:
        store.add(record(1))
        assert store.delete([hash_token("token-1")]) == 1
        store.touch(hash_token("token-1"), 5000)
        assert store.find(hash_token("token-1")) is None

    def test_delete_counts_what_existed(self, store: RefreshTokenStore) -> None:
        for n in range(1, 4):
            store.add(record(n))
        gone = [hash_token("token-1"), hash_token("token-3"), hash_token("never")]
        assert store.delete(gone) == 2
        assert [r.id for r in store.records()] == ["id0002"]
        assert store.delete([]) == 0

    def test_revoking_many_at_once(self, store: RefreshTokenStore) -> None:
        for n in range(250):  # more than one etcd transaction holds
            store.add(record(n, "ci"))
        tokens = RefreshTokens(store, RefreshPolicy(100, 50))
        assert tokens.revoke(store.records("ci"), "test") == 250
        assert store.records() == []

    def test_an_account_keeps_at_most_its_limit_the_least_recently_used_go(
        self, store: RefreshTokenStore
    ) -> None:
        """Each login adds a record: one user logging in in a loop filled the store (etcd's
        quota, shared with LAIN's registry record) with records that lived 30 idle days."""
        tokens = RefreshTokens(store, RefreshPolicy(10_000, 10_000, per_account=3))
        store.add(record(99, "bob"))
        issued = [tokens.issue("alice", "s", "c", "v", now=1000 + n)[1] for n in range(3)]
        store.touch(issued[0].token_hash, 2000)  # the oldest, but used last
        fourth = tokens.issue("alice", "s", "c", "v", now=1500)[1]
        kept = {r.id for r in store.records("alice")}
        assert kept == {issued[0].id, issued[2].id, fourth.id}  # issued[1]: used longest ago
        assert len(store.records("bob")) == 1

    def test_purge_removes_expired_and_idle_records_only(self, store: RefreshTokenStore) -> None:
        tokens = RefreshTokens(store, RefreshPolicy(lifetime=100, idle_timeout=50))
        store.add(record(1, created_at=0))  # expires at 101
        store.add(record(2, created_at=60))  # idle from 112, expires at 162
        store.add(record(3, created_at=100))  # last used 103: idle from 153
        assert tokens.maybe_purge(120) == 2
        assert [r.id for r in store.records()] == ["id0003"]
        assert tokens.maybe_purge(500) == 0  # at most once an hour per process


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> SqliteStore:
        (tmp_path / "sub").mkdir()  # made by no one but the operator: a typo is refused
        return SqliteStore(tmp_path / "sub" / "state.db")


def test_no_file_until_the_first_record(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    assert store.records() == []
    assert store.find("x") is None
    assert store.delete(["x"]) == 0
    assert not (tmp_path / "state.db").exists()
    store.add(record(1))
    path = tmp_path / "state.db"
    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_unwritable_location_is_a_state_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SqliteStore(blocker / "state.db")
    with pytest.raises(StateStoreError, match="cannot create state file"):
        store.add(record(1))


def test_a_file_that_is_not_sqlite_is_a_state_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StateStoreError, match=r"state\.db"):
        SqliteStore(path).records()


def _write_many(path: str, worker: int) -> None:
    store = SqliteStore(Path(path))
    for n in range(40):
        store.add(record(worker * 1000 + n, f"worker{worker}"))
        store.touch(hash_token(f"token-{worker * 1000 + n}"), 9999)


def test_several_processes_write_one_file_safely(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(str(path), w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    records = SqliteStore(path).records()
    assert len(records) == 160
    assert {r.last_used_at for r in records} == {9999}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_deleted_or_replaced_state_file_is_read_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted while the service ran, the kept read connections went on reading the old file:
    its refresh tokens kept working and `tokens revoke` (on the new, empty file) found none,
    while the brute-force counters were written to one file and read from the other."""
    path = tmp_path / "state.db"
    clock = Clock()
    service = SqliteStore(path, monotonic=clock)
    service.add(record(1))
    assert service.find(hash_token("token-1")) is not None
    service.add_failure(["k"], 100.0, 900)
    assert service.failures(["k"], 100.0, 900)["k"].count == 1
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)  # the WAL was checkpointed by the writer's close

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    # Reads look at the path at most every RECHECK_SECONDS (a stat cost ~12% of refresh grants).
    clock.now += sqlite.RECHECK_SECONDS
    assert service.find(hash_token("token-1")) is None  # gone with its file
    assert service.failures(["k"], 101.0, 900) == {}
    service.add_failure(["k"], 102.0, 900)
    assert service.failures(["k"], 102.0, 900)["k"].count == 1  # read where it was written
    assert "was deleted" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    backup.replace(path)  # a restore
    clock.now += sqlite.RECHECK_SECONDS
    assert service.find(hash_token("token-1")) is not None
    assert "was replaced" in caplog.text
    service.close()


def test_a_deleted_state_file_is_said_once_by_the_stores_sharing_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The refresh tokens' store and the login counters' each said it, and the second then
    called the file the first had made anew `replaced`."""
    path = tmp_path / "state.db"
    clock = Clock()
    tokens, counters = SqliteStore(path, monotonic=clock), SqliteStore(path, monotonic=clock)
    tokens.add(record(1))
    counters.add_failure(["k"], 100.0, 900)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    clock.now += sqlite.RECHECK_SECONDS
    assert tokens.find(hash_token("token-1")) is None
    assert counters.failures(["k"], 101.0, 900) == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"state file {path} was deleted: a new one is made; the refresh tokens and login "
        "counters in the old one are gone"
    ]
    tokens.close()
    counters.close()


def test_reads_look_at_the_path_at_most_every_recheck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh grant's read and a login's counters stat'ed the path every time (to notice a
    deleted or replaced file): ~12% of the refresh grants answered. Now at most every
    RECHECK_SECONDS; writes still look every time."""
    clock = Clock()
    service = SqliteStore(tmp_path / "state.db", monotonic=clock)
    service.add(record(1))
    looked: list[Path] = []
    stat_of_path = Path.stat

    def counting_stat(path: Path, **options: bool) -> object:
        looked.append(path)
        return stat_of_path(path, **options)

    monkeypatch.setattr(Path, "stat", counting_stat)
    for _ in range(3):
        assert service.find(hash_token("token-1")) is not None
        assert service.failures(["k"], 100.0, 900) == {}
    assert looked == []
    clock.now += sqlite.RECHECK_SECONDS
    assert service.find(hash_token("token-1")) is not None
    assert service.find(hash_token("token-1")) is not None
    assert looked == [tmp_path / "state.db"]
    service.touch(hash_token("token-1"), 2000)  # a write: looks at once
    assert len(looked) == 2
    service.close()
