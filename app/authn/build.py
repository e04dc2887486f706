"""Building the authentication chain from the settings: one link per `auth_backends` entry.

Without `auth_backends`, the `htpasswd` key alone is a one-link chain (the original setup keeps
working). Secrets named by `*_file` / `*_env` are read here, once, at start.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.authn.base import Authenticator
from app.authn.cache import CachingAuthenticator
from app.authn.chain import BackendChain, ChainLink
from app.authn.htpasswd import HtpasswdAuthenticator, load_htpasswd
from app.authn.jwt_tokens import JwtAuthenticator
from app.authn.ldap import LdapAuthenticator, directory_name_key
from app.authn.robots import Robot, RobotAuthenticator, load_robots
from app.authn.static import StaticAuthenticator, load_static_users
from app.authn.webhook import WebhookAuthenticator
from app.backend_settings import (
    HtpasswdBackend,
    JwtBackend,
    LdapBackend,
    RobotsBackend,
    StaticBackend,
    WebhookBackend,
)
from app.errors import ConfigError, UserStoreError
from app.pools import WorkerPool
from app.reload import Reloadable
from app.settings import Settings

Closer = Callable[[], Awaitable[None]]


PasswordFile = HtpasswdAuthenticator | StaticAuthenticator


@dataclass
class Authentication:
    """What the token service needs: the chain, the files to watch, what to close at exit."""

    authenticator: BackendChain | None
    reloadables: list[Reloadable[Any]] = field(default_factory=list)
    closers: list[Closer] = field(default_factory=list)
    passwords: WorkerPool | None = None  # where bcrypt runs (htpasswd, static users)
    robots: list[Callable[[], dict[str, Robot]]] = field(default_factory=list)  # each file's
    ldap: list[tuple[int, LdapAuthenticator]] = field(default_factory=list)  # (chain index, it)
    password_files: list[tuple[int, PasswordFile]] = field(default_factory=list)  # the same


def configured_backends(settings: Settings) -> list[Any]:
    if settings.auth_backends is not None:  # the settings refuse htpasswd beside them
        return list(settings.auth_backends)
    if settings.htpasswd is not None:
        return [HtpasswdBackend(type="htpasswd", path=settings.htpasswd)]
    return []


def build_authentication(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> Authentication:
    backends = configured_backends(settings)
    built = Authentication(None)
    if any(isinstance(b, HtpasswdBackend | StaticBackend) for b in backends):
        built.passwords = WorkerPool(
            "password-check", settings.password_check_threads, lower_priority=True
        )
        built.closers.append(built.passwords.aclose)
    links = [
        _link(backend, index, built, clock, settings) for index, backend in enumerate(backends)
    ]
    for index, ldap in built.ldap:
        ldap.others_after = functools.partial(_answered_by_any, links[index + 1 :])
    # An unknown name cost one bcrypt check in each password file: a name in the first of two
    # took half the time of any other, and told anyone timing logins who is in it. Now only
    # the last file that answers for the name pays it.
    for index, passwords in built.password_files:
        later = [links[other] for other, _ in built.password_files if other > index]
        passwords.others_after = functools.partial(_answered_by_any, later)
    built.authenticator = BackendChain(links) if links else None
    return built


def _answered_by_any(links: list[ChainLink], account: str) -> bool:
    return any(link.answers_for(account) for link in links)


def _link(
    backend: Any,
    index: int,
    built: Authentication,
    clock: Callable[[], float],
    settings: Settings,
) -> ChainLink:
    accounts = re.compile(backend.accounts) if backend.accounts else None
    authenticator = _authenticator(backend, index, built, clock)
    if isinstance(authenticator, HtpasswdAuthenticator | StaticAuthenticator):
        authenticator = _credential_cache(authenticator, settings)
    return ChainLink(
        backend.label,
        authenticator,
        accounts,
        robots=isinstance(backend, RobotsBackend),
        name_key=directory_name_key if isinstance(backend, LdapBackend) else None,
    )


def _authenticator(
    backend: Any, index: int, built: Authentication, clock: Callable[[], float]
) -> Authenticator:
    if isinstance(backend, HtpasswdBackend):
        path = backend.path
        users = _watch(
            built,
            _kind("htpasswd", backend),
            lambda: load_htpasswd(path),
            path,
            lambda u: len(u.hashes),
        )
        htpasswd = HtpasswdAuthenticator(users.get, built.passwords)
        built.password_files.append((index, htpasswd))
        return htpasswd
    if isinstance(backend, StaticBackend):
        path = backend.path
        static = _watch(
            built,
            _kind("users", backend),
            lambda: load_static_users(path),
            path,
            lambda u: len(u.users),
        )
        static_users = StaticAuthenticator(static.get, built.passwords)
        built.password_files.append((index, static_users))
        return static_users
    if isinstance(backend, RobotsBackend):
        path = backend.path
        robots = _watch(built, _kind("robots", backend), _robots_loader(path), path, len)
        built.robots.append(robots.get)
        return RobotAuthenticator(robots.get, clock)
    key = f"auth_backends.{index}"
    if isinstance(backend, LdapBackend):
        password = read_secret(
            backend.bind_password_file, backend.bind_password_env, f"{key}.bind_password"
        )
        ldap = LdapAuthenticator(backend, password, key=key)
        built.closers.append(ldap.aclose)
        built.ldap.append((index, ldap))
        return _cached(ldap, backend.cache_ttl, backend.cache_size, per_client=False)
    if isinstance(backend, JwtBackend):
        tokens = JwtAuthenticator(backend, key=key)
        built.closers.append(tokens.aclose)
        return tokens
    assert isinstance(backend, WebhookBackend)  # noqa: S101 - the union is closed
    secret = read_secret(backend.secret_file, backend.secret_env, f"{key}.secret", header=True)
    webhook = WebhookAuthenticator(backend, key=key, secret=secret)
    built.closers.append(webhook.aclose)
    return _cached(webhook, backend.cache_ttl, backend.cache_size, per_client=True)


def _kind(word: str, backend: HtpasswdBackend | StaticBackend | RobotsBackend) -> str:
    """What /readyz and /metrics call a backend's file (which anyone may ask: never its path):
    `htpasswd`, or `htpasswd staff` for a backend named `staff` (two may read htpasswd files)."""
    return word if backend.name is None else f"{word} {backend.name}"


# Robots files this process (or, for a granian worker, the main process it was forked from,
# which builds an app to check the config before any worker starts) has seen exist.
_ROBOTS_SEEN: set[Path] = set()


def _robots_loader(path: Path) -> Callable[[], dict[str, Robot]]:
    """The robots file's loader: missing at the start it means no robots yet (the first
    `robots create` makes it); gone once it existed it is a failed reload, as for a users file,
    and the robots go on working (a deleted file revoked every robot with no word in the log),
    and a new worker (a SIGHUP, a respawn) does not start on it."""

    def load() -> dict[str, Robot]:
        if path in _ROBOTS_SEEN and not path.exists():
            raise UserStoreError(
                f"robots file {path} is gone (to revoke robots: `registry-auth robots revoke`)"
            )
        robots = load_robots(path)
        if path.exists():
            _ROBOTS_SEEN.add(path)
        return robots

    return load


def _watch(
    built: Authentication,
    kind: str,
    loader: Callable[[], Any],
    path: Path,
    accounts: Callable[[Any], int] | None = None,
) -> Reloadable[Any]:
    reloadable: Reloadable[Any] = Reloadable(
        f"{kind} {path}", loader, lambda: [path], kind=kind, size=accounts
    )
    built.reloadables.append(reloadable)
    return reloadable


def _credential_cache(
    inner: HtpasswdAuthenticator | StaticAuthenticator, settings: Settings
) -> Authenticator:
    """bcrypt paid once per TTL; keyed on the current entry, so a change is refused at once."""
    if settings.credential_cache_ttl <= 0:
        return inner
    return CachingAuthenticator(
        inner,
        ttl=settings.credential_cache_ttl,
        max_entries=settings.credential_cache_size,
        version=inner.cache_version,
    )


def _cached(inner: Authenticator, ttl: float, size: int, *, per_client: bool) -> Authenticator:
    if ttl <= 0:
        return inner
    return CachingAuthenticator(inner, ttl=ttl, max_entries=size, per_client=per_client)


def read_secret(
    file: Path | None, env: str | None, prefix: str, *, header: bool = False
) -> SecretStr | None:
    """The secret from its file (trailing newline dropped) or environment variable. An empty
    one is refused: it failed every LDAP bind (503, naming no setting) and was sent as an empty
    shared-secret header (403 from the bridge: every login 401, counted as a guess). A `header`
    secret (a webhook's) must be one an HTTP header can carry: a line break or a non-ASCII
    character in it made every call fail, every login a 503."""
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problem = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"{prefix}_file", f"cannot read {file}: {problem}") from None
        if not value:
            raise ConfigError(f"{prefix}_file", f"{file} is empty")
        if header and not _header_safe(value):
            raise ConfigError(f"{prefix}_file", f"{file}: {_NOT_HEADER_SAFE}")
        return SecretStr(value)
    if env is not None:
        variable = os.environ.get(env)
        if variable is None:
            raise ConfigError(f"{prefix}_env", f"environment variable {env} is not set")
        if not variable:
            raise ConfigError(f"{prefix}_env", f"environment variable {env} is empty")
        if header and not _header_safe(variable):
            raise ConfigError(f"{prefix}_env", f"environment variable {env}: {_NOT_HEADER_SAFE}")
        return SecretStr(variable)
    return None


_NOT_HEADER_SAFE = (
    "the secret is sent in an HTTP header, so it may hold only printable ASCII characters "
    "(no line break, tab or other control character, no leading or trailing space)"
)


def _header_safe(value: str) -> bool:
    return value == value.strip(" ") and all(" " <= char <= "~" for char in value)
