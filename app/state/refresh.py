"""Refresh tokens: issue, check, list, revoke. Time is a parameter, randomness injectable.

A token is 256 random bits (`secrets.token_urlsafe(32)`), stored only as its SHA-256. A plain
hash is enough here: salts and slow hashes protect low-entropy passwords against guessing, and
nobody guesses through 2**256 candidates; a keyed hash (HMAC with a pepper) would add a secret
every instance must share and guard, for no gain against that. Unsalted, the hash is also the
lookup key: one indexed read per refresh grant.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from app.errors import InvalidGrantError, StateStoreError
from app.state.model import RefreshRecord, RefreshTokenStore

log = logging.getLogger(__name__)
# Refresh tokens deleted (and logged) at a time: one transaction of the etcd store (its
# MAX_TXN_OPS), so a cut-off leaves none deleted uncounted.
REVOKE_CHUNK = 100

TOKEN_BYTES = 32
PURGE_INTERVAL = 3600  # seconds between sweeps of expired records by one process
# A refresh grant records the use (for the idle timeout) only when the last one recorded is at
# least this old: docker makes a refresh grant for every pull and push, and a write for each
# cost more than the rest of the grant. So a token may die up to this much before exactly
# `idle_timeout` after its last use, never after. At most 1% of the idle timeout.
TOUCH_INTERVAL = 60


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_record_id() -> str:
    return secrets.token_hex(8)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    lifetime: int  # seconds from issue
    idle_timeout: int  # seconds since the last use
    per_account: int = 1000  # records kept per account; beyond, the least recently used go
    # A grant must name the client_id the token was issued to. Off by default: docker stores
    # the token `docker login` got (client_id "docker") where containerd (the docker daemon's
    # containerd image store, Kubernetes nodes) and containers/image (skopeo, podman) read it
    # and use it under their own fixed client_id; the spec asks only that a client_id be
    # "meaningful" for auditing, and anyone holding the token can send any client_id.
    same_client: bool = False


class RefreshTokens:
    """The rules of refresh tokens over any RefreshTokenStore."""

    def __init__(
        self,
        store: RefreshTokenStore,
        policy: RefreshPolicy,
        *,
        token_source: Callable[[], str] = new_token,
        id_source: Callable[[], str] = new_record_id,
    ) -> None:
        self.store = store
        self.policy = policy
        self._token_source = token_source
        self._id_source = id_source
        self._last_purge: int | None = None
        self._touch_interval = min(TOUCH_INTERVAL, policy.idle_timeout // 100)

    def issue(
        self, account: str, service: str, client_id: str, credential_version: str, now: int
    ) -> tuple[str, RefreshRecord]:
        """A new token (returned once, never stored) and its record."""
        token = self._token_source()
        record = RefreshRecord(
            id=self._id_source(),
            token_hash=hash_token(token),
            account=account,
            service=service,
            client_id=client_id,
            credential_version=credential_version,
            created_at=now,
            expires_at=now + self.policy.lifetime,
            last_used_at=now,
        )
        self.maybe_purge(now)
        self.store.add(record)
        log.info("issued refresh token %s to %r (client %r)", record.id, account, client_id)
        self._keep_at_most(account, self.policy.per_account)
        return token, record

    def _keep_at_most(self, account: str, limit: int) -> None:
        """Drop the account's least recently used records beyond `limit`: each login adds one,
        and nothing else would bound how many one user makes."""
        records = self.store.account_records(account)
        if len(records) <= limit:
            return
        records.sort(key=lambda r: (r.last_used_at, r.created_at))
        dropped = records[: len(records) - limit]
        self.store.delete([r.token_hash for r in dropped])
        log.info(
            "dropped %d refresh token(s) of %r used longest ago (refresh_tokens_per_account %d)",
            len(dropped), account, limit,
        )  # fmt: skip

    def check(self, token: str, service: str, client_id: str, now: int) -> RefreshRecord:
        """The live record of `token` for this service (and client, with `same_client`); else
        InvalidGrantError (a dead record is deleted first). Blocking: run it in a worker
        thread."""
        record = self.store.find(hash_token(token))
        if record is None:
            raise InvalidGrantError("unknown or revoked refresh token")
        if not self._bound_to(record, service, client_id):
            client = f" and client_id {record.client_id!r}" if self.policy.same_client else ""
            raise InvalidGrantError(
                f"refresh token {record.id} is bound to service {record.service!r}{client}",
                record.account,
            )
        problem = self.expiry_problem(record, now)
        if problem is not None:
            self.store.delete([record.token_hash])
            raise InvalidGrantError(f"refresh token {record.id} {problem}", record.account)
        return record

    def check_now(self, token: str, service: str, client_id: str, now: int) -> RefreshRecord | None:
        """The live record, when the store reads a local file (on the event loop: the hop to a
        worker thread and back cost more than the read) and the token is good; None to run
        `check` in a worker thread: an etcd store, or a token to refuse (refusing may delete)."""
        if not self.store.local_reads:
            return None
        record = self.store.find(hash_token(token))
        if (
            record is None
            or not self._bound_to(record, service, client_id)
            or self.expiry_problem(record, now) is not None
        ):
            return None
        return record

    def _bound_to(self, record: RefreshRecord, service: str, client_id: str) -> bool:
        same_client = not self.policy.same_client or record.client_id == client_id
        return record.service == service and same_client

    def expiry_problem(self, record: RefreshRecord, now: int) -> str | None:
        if now >= record.expires_at:
            return "has expired"
        if now >= record.last_used_at + self.policy.idle_timeout:
            return "was unused for longer than the idle timeout"
        return None

    def needs_touch(self, record: RefreshRecord, now: int) -> bool:
        """Whether a use at `now` must be recorded (see TOUCH_INTERVAL)."""
        return now - record.last_used_at >= self._touch_interval

    def touch(self, record: RefreshRecord, now: int) -> RefreshRecord:
        self.store.touch(record.token_hash, now)
        return replace(record, last_used_at=now)

    def revoke(self, records: list[RefreshRecord], reason: str) -> int:
        """Deleted a chunk at a time, each logged as it is done: cut off midway (etcd gone),
        the error says how many were revoked already, where it said only the error."""
        count = 0
        for start in range(0, len(records), REVOKE_CHUNK):
            chunk = records[start : start + REVOKE_CHUNK]
            try:
                count += self.store.delete([record.token_hash for record in chunk])
            except StateStoreError as exc:
                if not count:
                    raise
                raise StateStoreError(
                    f"{exc} (after {count} of {len(records)} refresh token(s) were revoked: "
                    "run it again for the rest)"
                ) from exc
            for record in chunk:
                log.info("revoked refresh token %s of %r: %s", record.id, record.account, reason)
        return count

    def records(self, account: str | None = None) -> list[RefreshRecord]:
        return self.store.records(account)

    def maybe_purge(self, now: int) -> int:
        """Delete dead records, at most once per PURGE_INTERVAL in this process."""
        if self._last_purge is not None and now - self._last_purge < PURGE_INTERVAL:
            return 0
        self._last_purge = now
        dead = [r for r in self.store.records() if self.expiry_problem(r, now) is not None]
        return self.store.delete([r.token_hash for r in dead]) if dead else 0
