"""The refresh-token record and the interface every store implements. Pure: no I/O.

Stores never see a token, only its SHA-256 (`token_hash`), and never decide validity: that is
app.state.refresh's job, with the time passed in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """One issued refresh token. `id` is public (listing, revoking); the token is not stored."""

    id: str
    token_hash: str
    account: str
    service: str
    client_id: str
    credential_version: str
    created_at: int
    expires_at: int
    last_used_at: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RefreshRecord:
        return cls(**json.loads(text))


class RefreshTokenStore(Protocol):
    """Where refresh records live. Every method raises app.errors.StateStoreError when the
    store cannot be used; third-party errors never leave a store."""

    # True when `find` reads a local file in microseconds (SQLite), so it may run on the event
    # loop; False when it goes over the network (etcd): then only in a worker thread.
    local_reads: bool

    def add(self, record: RefreshRecord) -> None: ...

    def find(self, token_hash: str) -> RefreshRecord | None: ...

    def touch(self, token_hash: str, last_used_at: int) -> None:
        """Record a use. Never brings back a record deleted meanwhile."""
        ...

    def records(self, account: str | None = None) -> list[RefreshRecord]:
        """Every record (of one account), oldest first."""
        ...

    def account_records(self, account: str) -> list[RefreshRecord]:
        """The account's records, oldest first, read without reading everyone's (each login
        that asks for a refresh token counts them); may leave out what an older version of
        the store wrote (etcd: records from before its account index)."""
        ...

    def delete(self, token_hashes: list[str]) -> int:
        """Delete these records; how many existed."""
        ...

    def close(self) -> None: ...
