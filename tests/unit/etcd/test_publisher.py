"""The publisher and its loop against an in-memory key with etcd's CAS rules; no time passes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from app.errors import EtcdConflictError, EtcdError
from app.etcd.loop import PublishLoop, backoff_delay, hide_where
from app.etcd.publisher import Outcome, Publisher
from app.etcd.record import Snapshot, encode_record
from app.settings_sections import EtcdSettings

RECORD = {"realm": "http://auth.test/token", "issuer": "auth server", "service": "lain.test"}
OURS = encode_record(RECORD)


class MemoryKey:
    """One key with etcd's compare-and-swap semantics; `down` makes every call fail."""

    where = "memory key"

    def __init__(self, value: str | None = None) -> None:
        self.value, self.version, self.index = value, (1 if value else None), 1
        self.down: str | None = None
        self.writes = 0
        self.before_write: Callable[[], None] = lambda: None

    def _up(self) -> None:
        if self.down:
            raise EtcdError(f"{self.where}: {self.down}")

    def read(self) -> Snapshot:
        self._up()
        return Snapshot(self.value, self.version, self.index)

    def _write(self, value: str) -> int:
        self.index += 1
        self.value, self.version, self.writes = value, self.index, self.writes + 1
        return self.index

    def create(self, value: str) -> int:
        self._up()
        self.before_write()
        if self.version is not None:
            raise EtcdConflictError("exists")
        return self._write(value)

    def replace(self, value: str, version: int) -> int:
        self._up()
        self.before_write()
        if self.version != version:
            raise EtcdConflictError("changed")
        return self._write(value)

    def delete_if(self, value: str) -> bool:
        self._up()
        if self.value != value:
            return False
        self.value = self.version = None
        return True

    def wait_for_change(self, after: int, timeout: float) -> bool:
        return False


def test_writes_only_when_the_stored_value_differs() -> None:
    key = MemoryKey()
    publisher = Publisher(key, RECORD, clock=lambda: 1_800_000_000.0)
    assert publisher.publish() is Outcome.CREATED
    assert publisher.publish() is Outcome.UNCHANGED
    assert key.value == OURS
    assert key.writes == 1


def test_a_hand_set_equivalent_value_is_left_alone() -> None:
    key = MemoryKey(
        '{"service": "lain.test", "issuer": "auth server", "realm": "http://auth.test/token"}'
    )
    assert Publisher(key, RECORD).publish() is Outcome.UNCHANGED
    assert key.writes == 0


def test_garbage_is_replaced(caplog: pytest.LogCaptureFixture) -> None:
    key = MemoryKey("garbage")
    assert Publisher(key, RECORD).publish() is Outcome.REPLACED
    assert key.value == OURS
    assert "held 'garbage'; replaced it with" in caplog.text


def test_a_value_written_between_read_and_swap_is_not_clobbered() -> None:
    key = MemoryKey("old")
    newer = '{"realm":"http://new/token","issuer":"new","service":"new"}'

    def someone_writes() -> None:
        key.before_write = lambda: None
        key._write(newer)

    key.before_write = someone_writes
    publisher = Publisher(key, RECORD)
    assert publisher.check() is False
    assert key.value == newer
    assert publisher.status.last_error == "changed"  # the CAS lost; looked at next time


def test_our_own_record_written_between_read_and_write_is_no_lost_race(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two workers of one service publish the same record as they start: the one outrun said
    `changed by another writer meanwhile` at every start with several workers."""
    for start in (None, "old"):
        key = MemoryKey(start)

        def another_worker_writes(key: MemoryKey = key) -> None:
            key.before_write = lambda: None
            key._write(OURS)

        key.before_write = another_worker_writes
        publisher = Publisher(key, RECORD)
        with caplog.at_level(logging.WARNING, logger="app.etcd"):
            assert publisher.check() is True
        assert (key.value, key.writes) == (OURS, 1)
        assert publisher.status.published is True
    assert caplog.records == []


def test_status_records_failures_then_success() -> None:
    key = MemoryKey()
    key.down = "connection refused"
    publisher = Publisher(key, RECORD, clock=lambda: 1_800_000_000.0)
    assert publisher.check() is False
    assert publisher.check() is False
    assert publisher.status.as_dict() == {
        "published": False,
        "last_error": "memory key: connection refused",
        "last_success": None,
        "failures": 2,
    }
    key.down = None
    assert publisher.check() is True
    assert publisher.status.as_dict() == {
        "published": True,
        "last_error": None,
        "last_success": "2027-01-15T08:00:00Z",
        "failures": 0,
    }


def test_unpublish_deletes_only_our_value() -> None:
    key = MemoryKey(OURS)
    assert Publisher(key, RECORD).unpublish() is True
    other = MemoryKey("someone else's")
    assert Publisher(other, RECORD).unpublish() is False
    assert other.value == "someone else's"


@pytest.mark.parametrize(
    ("failures", "random", "expected"),
    [(1, 0.0, 0.5), (1, 1.0, 1.0), (2, 0.0, 1.0), (3, 1.0, 4.0), (6, 1.0, 30.0), (500, 0.0, 15.0)],
)
def test_backoff_doubles_is_capped_and_jittered(
    failures: int, random: float, expected: float
) -> None:
    assert backoff_delay(failures, 1.0, 30.0, lambda: random) == pytest.approx(expected)


def run_steps(loop: PublishLoop, steps: int) -> list[float]:
    async def drive() -> list[float]:
        return [await loop.step() for _ in range(steps)]

    return asyncio.run(drive())


def test_the_loop_backs_off_while_etcd_is_down_and_returns_to_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = MemoryKey()
    key.down = "connection refused"
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            key.down = None  # etcd comes back

    async def run_sync(function: Callable[[], Any]) -> Any:
        return function()

    settings = EtcdSettings(interval=10.0, retry_initial=1.0, retry_max=4.0)
    loop = PublishLoop(
        Publisher(key, RECORD), settings, sleep=sleep, random=lambda: 1.0, run_sync=run_sync
    )
    with caplog.at_level(logging.INFO, logger="app.etcd"):
        assert run_steps(loop, 5) == [1.0, 2.0, 4.0, 10.0, 10.0]
    assert slept == [1.0, 2.0, 4.0, 10.0, 10.0]
    assert key.value == OURS
    assert loop.publisher.status.published is True
    # One line per failed attempt: the cause and when the next one comes.
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert failed == [
        f"etcd: publishing failed (attempt {n}): memory key: connection refused; "
        f"next attempt in {delay:.1f} s"
        for n, delay in ((1, 1.0), (2, 2.0), (3, 4.0))
    ]
    # And when it works again: the last line no longer says it fails.
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"etcd: published {OURS} to memory key",
        "etcd: published again after 3 failed attempt(s)",
    ]


def test_a_lost_race_is_one_line_saying_when_it_looks_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = MemoryKey("old")
    key.before_write = lambda: (setattr(key, "before_write", lambda: None), key._write("new"))

    async def run_sync(function: Callable[[], Any]) -> Any:
        return function()

    async def sleep(_seconds: float) -> None:
        return None

    settings = EtcdSettings(retry_initial=1.0, retry_max=4.0)
    loop = PublishLoop(
        Publisher(key, RECORD), settings, sleep=sleep, random=lambda: 1.0, run_sync=run_sync
    )
    with caplog.at_level(logging.INFO, logger="app.etcd"):
        run_steps(loop, 1)
    assert [r.getMessage() for r in caplog.records] == ["etcd: changed; will look again in 1.0 s"]


def test_readyz_shows_an_etcd_error_without_its_host_or_port() -> None:
    """A host name that did not resolve reached /readyz in urllib3's words, host and port
    included, though anyone may ask /readyz (the log names them)."""
    endpoint = "http://etcd.lain.invalid:4001"
    error = (
        f"{endpoint} /lain/config/auth: cannot connect (HTTPConnection(host='etcd.lain.invalid', "
        "port=4001): Failed to resolve 'etcd.lain.invalid' ([Errno -2] Name or service not "
        "known))"
    )
    shown = hide_where(error, f"{endpoint} /lain/config/auth", [endpoint])
    assert shown == (
        "cannot connect (etcd: Failed to resolve its host ([Errno -2] Name or service not known))"
    )
    assert "lain" not in shown
    assert "4001" not in shown
    # A host named `etcd` (Kubernetes, compose) is hidden where it stands as a host only.
    named = "http://etcd:2379"
    error = (
        "cannot connect (HTTPConnection(host='etcd', port=2379): Failed to resolve 'etcd' "
        "([Errno -3] Temporary failure in name resolution)); etcd:2379 said so"
    )
    assert hide_where(error, f"{named} /k", [named]) == (
        "cannot connect (etcd: Failed to resolve its host ([Errno -3] Temporary failure in name "
        "resolution)); etcd said so"
    )
    hung = "timed out waiting for an answer (etcd took the connection but did not reply: ...)"
    assert hide_where(hung, f"{named} /k", [named]) == hung


def test_a_worker_replaced_by_a_roll_leaves_the_key_to_the_new_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    newer = '{"realm": "http://auth.test/v2/token", "issuer": "auth server", "service": "x"}'
    key = MemoryKey(newer)
    rolled = [False]
    publisher = Publisher(key, RECORD, superseded=lambda: rolled[0])
    assert publisher.publish() is Outcome.REPLACED  # before any roll: its record, as always
    key.value = newer
    rolled[0] = True  # workers on a config read after this one's now publish
    assert publisher.check()  # not a failure for its /readyz
    assert publisher.publish() is Outcome.LEFT
    assert key.value == newer
    assert key.writes == 1
    assert caplog.text.count("left to the workers started after a reload") == 1  # said once
    key.value = OURS  # and a key that holds its own record is simply right
    assert publisher.publish() is Outcome.UNCHANGED
