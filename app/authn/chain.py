"""The backend chain: ordered backends; the first decisive answer wins; nothing decisive rejects.

A backend that cannot decide (BackendUnavailableError) stops the chain with that error (503):
asking the next backend instead could accept someone the unavailable one would have refused.
Backends only hear about the accounts they answer for (`accounts`), and names with the robot
prefix go to the robot store alone, so no other backend can answer for a robot name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from app.authn.base import (
    AccountLookup,
    AccountState,
    Authenticator,
    AuthResult,
    Credentials,
    Outcome,
)
from app.backend_settings import ROBOT_PREFIX
from app.errors import BackendUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChainLink:
    name: str
    authenticator: Authenticator
    accounts: re.Pattern[str] | None = None
    robots: bool = False  # the robot store: the one link that sees ROBOT_PREFIX names
    # How the backend compares names, when not as typed (LDAP: without case or outer spaces).
    name_key: Callable[[str], str] | None = None

    def answers_for(self, account: str) -> bool:
        if account.startswith(ROBOT_PREFIX) != self.robots:
            return False
        return self.accounts is None or self.accounts.fullmatch(account) is not None


class BackendChain:
    """An Authenticator made of others, asked in order."""

    def __init__(self, links: Sequence[ChainLink]) -> None:
        self.links = tuple(links)
        self._folding = tuple(
            (link, link.name_key) for link in self.links if link.name_key is not None
        )

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        for index, link in enumerate(self.links):
            if not link.answers_for(credentials.account):
                continue
            result = await ask_link(link, credentials)
            if result.outcome is Outcome.NOT_MINE:
                continue
            if result.accepted and result.account is None:
                result = replace(result, account=credentials.account)
            elif result.accepted and result.account != credentials.account:
                owner = await self.earlier_owner(index, result.account)
                if owner is not None:
                    log.warning(
                        "backend %s accepted %r as %r, an account of backend %s, which is asked "
                        "first: refused (a name one backend holds cannot be reached through "
                        "another by spelling it differently)",
                        link.name, credentials.account, result.account, owner,
                    )  # fmt: skip
                    return AuthResult(Outcome.SHADOWED)
            log.debug("backend %s decided %s", link.name, result.outcome)
            return result
        return AuthResult(Outcome.NOT_MINE)  # no backend knows the account: refused too

    async def earlier_owner(self, before: int, account: str | None) -> str | None:
        """The name of a backend asked before link `before` that holds `account` (a name a
        later backend accepted another spelling as: LDAP's `CAROL` for `carol`), among those
        that can look an account up (htpasswd, static users, robots)."""
        if account is None:
            return None
        for link in self.links[:before]:
            if (
                link.answers_for(account)
                and isinstance(link.authenticator, AccountLookup)
                and await link.authenticator.account_state(account) is not None
            ):
                return link.name
        return None

    def throttle_name(self, account: str) -> str:
        """The name a login is counted under by the brute-force counters: as typed, unless a
        backend answering for it takes other spellings as the same name (ThrottleNames)."""
        for link, name_key in self._folding:
            if link.answers_for(account):
                return name_key(account)
        return account

    async def account_state(self, account: str) -> AccountState | None:
        """The state from the first backend owning the account that can look it up without a
        password (htpasswd, static users). None when none of them knows it: a refresh token
        issued for it then stops working."""
        for link in self.links:
            if link.answers_for(account) and isinstance(link.authenticator, AccountLookup):
                state = await link.authenticator.account_state(account)
                if state is not None:
                    return state
        return None


async def ask_link(link: ChainLink, credentials: Credentials) -> AuthResult:
    """One backend's answer; any error of it a BackendUnavailableError (an outage: 503)."""
    try:
        return await link.authenticator.authenticate(credentials)
    except BackendUnavailableError as exc:
        log.warning("%s", exc)
        raise
    except Exception as exc:
        # A backend bug must never turn into an accept or a 500 trace: it is an outage.
        # Only the type is logged: a third-party message could quote the credentials.
        log.error("backend %s failed: %s", link.name, type(exc).__name__)  # noqa: TRY400
        raise BackendUnavailableError(link.name, "internal error") from exc
