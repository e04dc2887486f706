"""Building the service's parts from the settings: the state stores, the login throttle, the
ACL authorizer. Kept apart from app/service.py, which only uses them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.authn.build import read_secret
from app.authz.base import Authorizer
from app.authz.engine import PolicyAuthorizer
from app.authz.files import load_policy
from app.authz.webhook import AuthzWebhook
from app.errors import ConfigError
from app.etcd.failure_store import EtcdFailureStore
from app.etcd.handshake import TlsFiles, tls_file_problem
from app.etcd.refresh_store import EtcdRefreshStore
from app.etcd.state import open_state_client, state_connection
from app.reload import Reloadable
from app.settings import Settings
from app.state.attempts import FailureStore, LoginThrottle
from app.state.memory import MemoryFailureStore
from app.state.model import RefreshTokenStore
from app.state.refresh import RefreshPolicy, RefreshTokens
from app.state.sqlite import SqliteStore, unwritable_because

Clock = Callable[[], float]
Closer = Callable[[], Awaitable[None]]


def open_state_store(settings: Settings) -> RefreshTokenStore | None:
    """The configured refresh-token store (None with `state.backend: none`); opens no
    connection yet."""
    state = settings.state
    if state.backend == "none":
        return None
    if state.backend == "etcd":
        return EtcdRefreshStore(open_state_client(state), state.etcd_prefix)
    return SqliteStore(state.path)


def refresh_tokens_from_settings(settings: Settings) -> RefreshTokens | None:
    """None when refresh tokens are off: clients then keep sending their password."""
    store = open_state_store(settings)
    if store is None:
        return None
    policy = RefreshPolicy(
        settings.refresh_token_lifetime,
        settings.refresh_token_idle_timeout,
        settings.refresh_tokens_per_account,
        settings.refresh_token_same_client,
    )
    return RefreshTokens(store, policy)


def open_failure_store(settings: Settings) -> FailureStore:
    """Where failed-login counters live: the state store's backend."""
    state = settings.state
    if state.backend == "none":
        return MemoryFailureStore()
    if state.backend == "etcd":
        brute_force = settings.brute_force
        return EtcdFailureStore(
            open_state_client(state), brute_force.etcd_prefix, brute_force.etcd_read_cache
        )
    return SqliteStore(state.path)


def login_throttle_from_settings(settings: Settings, clock: Clock) -> LoginThrottle | None:
    if not settings.brute_force.enabled:
        return None
    store = open_failure_store(settings)
    # While a shared store is unavailable, failures are counted in memory rather than not at all.
    fallback = None if isinstance(store, MemoryFailureStore) else MemoryFailureStore()
    return LoginThrottle(store, settings.brute_force, clock, fallback)


def state_closers(
    refresh_tokens: RefreshTokens | None, throttle: LoginThrottle | None
) -> list[Closer]:
    """Closing the stores opened here (an etcd store keeps an HTTP client), at shutdown."""
    stores: list[RefreshTokenStore | FailureStore] = []
    if refresh_tokens is not None:
        stores.append(refresh_tokens.store)
    if throttle is not None:
        stores.append(throttle.store)
    return [_async(store.close) for store in stores]


def _async(close: Callable[[], None]) -> Closer:
    async def closer() -> None:
        close()  # quick: sockets closed, nothing awaited on the network

    return closer


def policy_authorizer(settings: Settings, reloadables: list[Reloadable[Any]]) -> Authorizer | None:
    """The ACL file as a hot-reloaded authorizer; None (the built-in default) without `acl`."""
    if settings.acl is None:
        return None
    path = settings.acl
    policy = Reloadable(
        f"ACL {path}",
        lambda: load_policy(path),
        lambda: [path],
        kind="ACL",
        size=lambda loaded: len(loaded.rules),
        emptied="%s now has no rule (it had %d): every request is granted nothing",
    )
    reloadables.append(policy)
    return PolicyAuthorizer(policy.get)


def authz_webhook_from_settings(settings: Settings) -> AuthzWebhook | None:
    """The authorization webhook, with its shared secret read; None without `authz_webhook`."""
    config = settings.authz_webhook
    if config is None:
        return None
    secret = read_secret(config.secret_file, config.secret_env, "authz_webhook.secret", header=True)
    return AuthzWebhook(config, secret=secret)


def start_refusal(settings: Settings) -> ConfigError | None:
    """What the start, and a SIGHUP, refuse beyond the settings' own checks: files the stores
    and the etcd clients would only open at their first use, failing open or retrying then,
    each said only when a login (or a publish) needs it. Not for a worker that replaces one
    that died: it serves as they let it."""
    return state_path_error(settings) or etcd_tls_error(settings)


def etcd_tls_error(settings: Settings) -> ConfigError | None:
    """A TLS file of an etcd client (the state store's, the publisher's) that cannot be read
    or loaded: the service started and said it was ready, while no refresh token could be
    issued, or the registry's record never published."""
    clients: list[tuple[str, TlsFiles]] = []
    if settings.state.backend == "etcd":
        clients.append(("state.etcd_", state_connection(settings.state)))
    if settings.etcd is not None:
        clients.append(("etcd.", settings.etcd))
    for prefix, tls in clients:
        problem = tls_file_problem(tls)
        if problem is not None:
            return ConfigError(f"{prefix}{problem.setting}", problem.detail)
    return None


def state_path_error(settings: Settings) -> ConfigError | None:
    """Why the start, and a SIGHUP, refuse `state.path`: the SQLite store fails open, so
    brute-force counting would go on in memory only and no refresh token be issued, each said
    only when a login needs it (a SIGHUP to a mistyped `state.path` lost every refresh token
    that way)."""
    if settings.state.backend != "sqlite":
        return None
    problem = unwritable_because(settings.state.path)
    if problem is None:
        return None
    return ConfigError(
        "state.path",
        f"{problem}: failed logins could not be counted nor refresh tokens kept; point it "
        "at a file in a directory this user may write "
        "(e.g. /var/lib/registry-auth/registry-auth.db), or set state.backend",
    )
