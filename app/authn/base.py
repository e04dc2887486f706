"""The authentication contract: credentials in, a decision out (a value, not an exception)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from pydantic import SecretStr

from app.errors import UserStoreError


# A NamedTuple, not a frozen dataclass: two are built for every login, and a frozen dataclass's
# __init__ pays ~1,200 instructions per field (docs/performance.md).
class Credentials(NamedTuple):
    """An account and its password; the password prints as '**********'.

    `service` and `client_ip` say where the request came from (the token service fills them
    in); a backend may pass them on (the webhook does) but never sees the HTTP request itself.
    """

    account: str
    password: SecretStr
    service: str | None = None
    client_ip: str | None = None


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # this backend knows the account and the password is wrong
    EXPIRED = "expired"  # it knows the account, the password is right, the account has expired
    # It knows the account and the password is right, but cannot name the account (an LDAP
    # entry without its `account_attribute`): refused, and not counted as a guess.
    UNNAMED = "unnamed"
    # A later backend took the name as another spelling of an account an earlier backend
    # holds (LDAP's `CAROL` for a local `carol`): refused by the chain, counted as a failure.
    SHADOWED = "shadowed"
    NOT_MINE = "not_mine"  # this backend does not know the account


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: Outcome
    account: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    # Changes whenever the account's credential changes (see AccountState); None when the
    # backend cannot tell, and then no refresh token is issued for the account.
    credential_version: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


class Authenticator(Protocol):
    """A backend. Returns a result for every credential; raises only when it cannot decide."""

    async def authenticate(self, credentials: Credentials) -> AuthResult: ...


@dataclass(frozen=True, slots=True)
class AccountState:
    """What a refresh grant re-checks without a password: the account still exists, and its
    credential is the one the refresh token was issued against."""

    credential_version: str
    groups: frozenset[str] = field(default_factory=frozenset)


@runtime_checkable
class AccountLookup(Protocol):
    """A backend that can look an account up without its password (needed for refresh tokens).

    `credential_version` must change when the password changes (a fingerprint of the stored
    hash, an LDAP pwdChangedTime, ...) and must not reveal the credential.
    """

    async def account_state(self, account: str) -> AccountState | None:
        """None when the account no longer exists."""
        ...


@runtime_checkable
class ThrottleNames(Protocol):
    """An authenticator whose backends take some names as equal (an LDAP directory: `CAROL`,
    ` carol` and `carol` are one person there). The brute-force counters count a login under
    this name, so each spelling does not get an allowance of its own."""

    def throttle_name(self, account: str) -> str: ...


def check_groups(groups: Any, where: str) -> frozenset[str]:
    """Groups from a users or robots file: a list of names, each one line of printable text
    (`robots list` shows them on one line, comma-separated). `robots create` checks them with
    this rule too, so it never writes a file the robots store refuses."""
    if not isinstance(groups, list):
        raise UserStoreError(f"{where}: must be a list of group names")
    for group in groups:
        if not isinstance(group, str) or not group or not group.isprintable():
            raise UserStoreError(
                f"{where}: {group!r} is not a group name (one line of printable text)"
            )
    return frozenset(groups)
