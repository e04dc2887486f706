"""Keeping the registry's auth record in etcd true: one check, its outcome, and the status.

`check()` reads the key and writes only when the stored value differs, by compare-and-swap on
the version it read, so a value written meanwhile by someone else is never overwritten blindly;
it is looked at again on the next check. Never raises for etcd trouble: that is status.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from app.errors import EtcdConflictError, EtcdError
from app.etcd.backend import KeyBackend
from app.etcd.record import Snapshot, describe, encode_record, matches

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Outcome(enum.Enum):
    UNCHANGED = "already up to date"
    CREATED = "created"
    REPLACED = "replaced"
    LEFT = "left to the workers started after a reload"


@dataclass(frozen=True, slots=True)
class PublishStatus:
    """What /readyz shows. `published`: the last check found or made the key right."""

    published: bool = False
    last_error: str | None = None
    last_success: float | None = None
    failures: int = 0  # consecutive failed checks
    index: int | None = None  # store index/revision of the last good check: watch from here

    def as_dict(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "last_error": self.last_error,
            "last_success": _iso(self.last_success),
            "failures": self.failures,
        }


class Publisher:
    """Owns the key. Thread-safe: checks may run in a worker thread while /readyz reads."""

    def __init__(
        self,
        backend: KeyBackend,
        record: dict[str, str],
        *,
        clock: Clock = time.time,
        superseded: Callable[[], bool] = lambda: False,
    ) -> None:
        self.backend = backend
        self.value = encode_record(record)
        self._record = record
        self._clock = clock
        # True once workers started after this one (a SIGHUP roll) publish: a worker still on
        # the old config then leaves the key to them. Each restored its own record at once,
        # and the key flipped between the old realm and the new until the roll ended.
        self._superseded = superseded
        self._left = False
        self._lock = threading.Lock()
        self.status = PublishStatus()
        self.outrun = False  # the last attempt lost a race with another writer

    def publish(self) -> Outcome:
        """Make the key hold our record. EtcdError (EtcdConflictError if outrun) otherwise."""
        return self._publish()[0]

    def check(self) -> bool:
        """One publish attempt, recorded in `status`; True when the key is right."""
        with self._lock:
            try:
                _, index = self._publish()
            except EtcdError as exc:
                self._failed(exc)
                return False
            self.status = PublishStatus(True, None, self._clock(), 0, index)
            return True

    def _publish(self) -> tuple[Outcome, int]:
        snapshot = self.backend.read()
        if matches(snapshot.value, self._record):
            return Outcome.UNCHANGED, snapshot.index
        if self._superseded():
            if not self._left:
                self._left = True
                log.info("etcd: %s: %s", self.backend.where, Outcome.LEFT.value)
            return Outcome.LEFT, snapshot.index
        try:
            return self._write(snapshot)
        except EtcdConflictError:
            # Outrun by another writer: when that was one of ours (another worker of this
            # service, publishing the same record as it starts), the key is right.
            again = self.backend.read()
            if matches(again.value, self._record):
                return Outcome.UNCHANGED, again.index
            raise

    def _write(self, snapshot: Snapshot) -> tuple[Outcome, int]:
        if snapshot.version is None:
            index = self.backend.create(self.value)
            log.info("etcd: published %s to %s", self.value, self.backend.where)
            return Outcome.CREATED, index
        index = self.backend.replace(self.value, snapshot.version)
        log.warning(
            "etcd: %s held %s; replaced it with %s",
            self.backend.where,
            describe(snapshot.value),
            self.value,
        )
        return Outcome.REPLACED, index

    def unpublish(self) -> bool:
        """Delete the key if it still holds our record (opt-in, at shutdown)."""
        try:
            deleted = self.backend.delete_if(self.value)
        except EtcdError as exc:
            log.warning("etcd: could not delete the key at shutdown: %s", exc)
            return False
        log.info("etcd: %s %s", "deleted" if deleted else "left (not ours now)", self.backend.where)
        return deleted

    def _failed(self, exc: EtcdError) -> None:
        failures = self.status.failures + 1
        self.status = replace(
            self.status, published=False, last_error=str(exc), failures=failures, index=None
        )
        self.outrun = isinstance(exc, EtcdConflictError)  # logged by the caller, with its delay


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
