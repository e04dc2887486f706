"""The authentication contract: credentials in, a decision out (a value, not an exception)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pydantic import SecretStr


@dataclass(frozen=True, slots=True)
class Credentials:
    """An account and its password; the password prints as '**********'."""

    account: str
    password: SecretStr


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # this backend knows the account and the password is wrong
    NOT_MINE = "not_mine"  # this backend does not know the account


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: Outcome
    account: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


class Authenticator(Protocol):
    """A backend. Returns a result for every credential; raises only when it cannot decide."""

    async def authenticate(self, credentials: Credentials) -> AuthResult: ...
