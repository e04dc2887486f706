"""Static users in a YAML file: bcrypt hashes and groups per user (hot-reloaded by the caller).

    users:
      alice:
        password: "$2b$12$..."      # bcrypt, e.g. from `registry-auth users hash`
        groups: [ci, developers]

Checks run in worker threads, and an unknown account is checked against a dummy hash so it
takes as long as a wrong password (as in htpasswd.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.authn.base import AccountState, AuthResult, Credentials, Outcome, check_groups
from app.authn.htpasswd import (
    bcrypt_problem,
    credential_version,
    dummy_hash,
    run_check,
    validate_account,
    warn_robot_names,
)
from app.errors import UserStoreError
from app.pools import WorkerPool
from app.yaml_strict import load_strict_yaml, yaml_kind, yaml_problem


@dataclass(frozen=True, slots=True)
class StaticUser:
    hashed: bytes = field(repr=False)
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StaticUsers:
    """The parsed file. The repr names the file and accounts, never a hash."""

    path: Path
    users: dict[str, StaticUser] = field(repr=False)
    dummy_hash: bytes = field(repr=False)


def parse_static_users(data: Any, path: Path) -> dict[str, StaticUser]:
    """account -> user; any problem is a UserStoreError naming the file and the account."""
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"users"}:
        raise UserStoreError(f"{path}: must be a mapping with one key, `users`")
    entries = data.get("users") or {}
    if not isinstance(entries, dict):
        raise UserStoreError(f"{path}: users: must map account names to entries")
    for name in entries:
        if not isinstance(name, str):
            # YAML reads `no:` as false, `0123:` as 83, `null:` as null: taken as text they were
            # other accounts (`False`), or two names the same one, the last silently winning.
            raise UserStoreError(
                f"{path}: users: an account name reads as {yaml_kind(name)} ({name!r}), not "
                "text: put it in quotes (YAML reads no, on, null, 0123 so)"
            )
    return {name: _parse_user(name, entry, path) for name, entry in entries.items()}


def _parse_user(name: str, entry: Any, path: Path) -> StaticUser:
    where = f"{path}: users.{name}"
    try:
        validate_account(name)
    except UserStoreError as exc:
        raise UserStoreError(f"{where}: {exc}") from None
    if not isinstance(entry, dict):
        raise UserStoreError(f"{where}: must be a mapping of `password` and `groups`")
    unknown = sorted(str(key) for key in set(entry) - {"password", "groups"})
    if unknown:
        raise UserStoreError(
            f"{where}: unknown key {', '.join(unknown)} (known: `password`, `groups`)"
        )
    hashed = entry.get("password")
    if not isinstance(hashed, str):
        raise UserStoreError(f"{where}: password: must be a bcrypt hash ($2b$/$2y$/$2a$)")
    problem = bcrypt_problem(hashed)
    if problem is not None:
        raise UserStoreError(f"{where}: password: {problem}")
    groups = check_groups(entry.get("groups") or [], f"{where}: groups")
    return StaticUser(hashed.encode("ascii"), groups)


def load_static_users(path: Path) -> StaticUsers:
    try:
        data = load_strict_yaml(path.read_text(encoding="utf-8"))  # a user twice is refused
    except OSError as exc:
        raise UserStoreError(f"cannot read users file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserStoreError(f"users file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise UserStoreError(f"users file {path} is not valid YAML{yaml_problem(exc)}") from None
    users = parse_static_users(data, path)
    warn_robot_names(users, path)
    return StaticUsers(path, users, dummy_hash({k: u.hashed for k, u in users.items()}))


class StaticAuthenticator:
    """Checks credentials against the current static users (`users` is called per request)."""

    def __init__(self, users: Callable[[], StaticUsers], pool: WorkerPool | None = None) -> None:
        self._users = users
        self._pool = pool
        self.others_after: Callable[[str], bool] = lambda _: False  # as HtpasswdAuthenticator's

    def cache_version(self, account: str) -> bytes | None:
        """The account's hash and groups: a cached success carries the groups, so a change of
        either must miss. None for an unknown account."""
        user = self._users().users.get(account)
        if user is None:
            return None
        return repr((user.hashed, sorted(user.groups))).encode("utf-8", "surrogateescape")

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        users = self._users()
        user = users.users.get(credentials.account)
        if user is None and self.others_after(credentials.account):
            return AuthResult(Outcome.NOT_MINE)
        password = credentials.password.get_secret_value()
        hashed = user.hashed if user is not None else users.dummy_hash
        ok = await run_check(self._pool, password, hashed)
        if user is None:
            return AuthResult(Outcome.NOT_MINE)
        if not ok:
            return AuthResult(Outcome.REJECTED)
        return AuthResult(
            Outcome.ACCEPTED,
            credentials.account,
            user.groups,
            credential_version=credential_version(user.hashed),
        )

    async def account_state(self, account: str) -> AccountState | None:
        """For refresh grants: the account still exists, with this password and these groups."""
        user = self._users().users.get(account)
        return None if user is None else AccountState(credential_version(user.hashed), user.groups)
