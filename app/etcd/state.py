"""The state stores' side of etcd (refresh tokens, login counters): their gateway client,
built from the `state:` settings, and the one place a GatewayError becomes StateStoreError.

While etcd does not answer, a store does not wait `etcd_timeout` on every login: after a
failed request it answers "unavailable" at once for `RETRY_AFTER` seconds, then lets one
request try again (a circuit breaker per client). The login counters go on in memory
(app.state.attempts) and a refresh grant is a 503 either way; only the wait goes. One log line
says it went, one that it is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from app.breaker import CircuitBreaker
from app.errors import StateStoreError
from app.etcd.gateway import (
    Connection,
    GatewayClient,
    GatewayClosedError,
    GatewayError,
    GatewayRefusedError,
)
from app.settings_sections import StateSettings

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0  # seconds a store answers "unavailable" without asking etcd, after a failure


def open_state_client(state: StateSettings) -> GatewayClient:
    """Opens no connection yet: the first call does."""
    return GatewayClient(state_connection(state))


def state_connection(state: StateSettings) -> Connection:
    return Connection(
        state.etcd_endpoints,
        state.etcd_timeout,
        username=state.etcd_username,
        password=state.etcd_password,
        ca_cert=state.etcd_ca_cert,
        client_cert=state.etcd_client_cert,
        client_key=state.etcd_client_key,
    )


class _Outage:
    """Whether a client's etcd is down, shared by the threads and the event loop using it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._breaker = CircuitBreaker(failures=1, reset_after=RETRY_AFTER)
        self._since: float | None = None

    def allow(self) -> float | None:
        """None: ask etcd; else the seconds since the outage began (answer without asking)."""
        now = self._clock()
        with self._lock:
            if self._breaker.allow(now) or self._since is None:
                return None
            return now - self._since

    def failed(self, where: str, problem: str) -> None:
        now = self._clock()
        with self._lock:
            began, self._since = self._since is None, self._since or now
            self._breaker.record_failure(now)
        if began and _went_down(where, now):
            log.warning(
                "state store (%s) unavailable: %s; until it answers, failed logins are counted "
                "in each process's memory and no refresh token is issued (refresh grants get "
                "503); asked again every %g s",
                where, problem, RETRY_AFTER,
            )  # fmt: skip

    def answered(self, where: str) -> None:
        now = self._clock()
        with self._lock:
            self._since = None
            self._breaker.record_success()
        # Whichever client of this etcd answers first says so (the one that saw the outage may
        # not be asked again for long: the refresh tokens' store, say).
        down_for = _came_back(where, now)
        if down_for is not None:
            log.warning("state store (%s) available again after %.0f s", where, down_for)


# The etcd stores down now, by `where`, with the time (time.monotonic, or a test's clock) it
# began: the refresh tokens' and the login counters' clients of one etcd said each outage
# twice; /readyz shows them.
_DOWN: dict[str, float] = {}
_DOWN_LOCK = threading.Lock()


def _went_down(where: str, now: float) -> bool:
    """Record the outage; whether it is news (no other client of `where` said it)."""
    with _DOWN_LOCK:
        if where in _DOWN:
            return False
        _DOWN[where] = now
        return True


def _came_back(where: str, now: float) -> float | None:
    """The seconds `where` was down, if it was."""
    with _DOWN_LOCK:
        since = _DOWN.pop(where, None)
    return None if since is None else now - since


def forget_outages() -> None:
    """As if every etcd state store answered (for tests: a fresh process)."""
    with _DOWN_LOCK:
        _DOWN.clear()
    with _OUTAGES_LOCK:
        _OUTAGES.clear()


def state_outages() -> list[tuple[str, float]]:
    """(where, seconds down) of each etcd state store that does not answer, for /readyz."""
    now = time.monotonic()
    with _DOWN_LOCK:
        return [(where, now - since) for where, since in sorted(_DOWN.items())]


# One per etcd (its endpoints), not per client: the login counters' and the refresh tokens'
# clients of one etcd each waited their own timeout, so a `docker login` to a hung etcd waited
# twice (10 s with the defaults).
_OUTAGES: dict[tuple[str, Callable[[], float]], _Outage] = {}
_OUTAGES_LOCK = threading.Lock()


def _outage(etcd: GatewayClient, clock: Callable[[], float]) -> _Outage:
    with _OUTAGES_LOCK:
        key = (etcd.where, clock)
        outage = _OUTAGES.get(key)
        if outage is None:
            outage = _OUTAGES[key] = _Outage(clock)
        return outage


@contextlib.contextmanager
def state_errors(
    etcd: GatewayClient, clock: Callable[[], float] = time.monotonic
) -> Iterator[None]:
    outage = _outage(etcd, clock)
    down_for = outage.allow()
    if down_for is not None:
        raise StateStoreError(
            f"{etcd.where}: not asked: down for {down_for:.0f} s (asked again every "
            f"{RETRY_AFTER:g} s)"
        )
    try:
        yield
    except GatewayClosedError as exc:  # this client's end, not etcd's: no outage of it
        raise StateStoreError(f"{etcd.where}: {exc}") from exc
    except GatewayRefusedError as exc:
        # etcd answered: a full database refusing writes still serves reads, and a role may
        # cover one store's prefix and not the other's. Taken for an outage, a refused write
        # made the refresh grants' reads fail too, and the log said "unavailable" and "back"
        # by turns.
        outage.answered(etcd.where)
        raise StateStoreError(f"{etcd.where}: {_without_endpoint(str(exc), etcd)}") from exc
    except GatewayError as exc:
        problem = _without_endpoint(str(exc), etcd)
        outage.failed(etcd.where, problem)
        raise StateStoreError(f"{etcd.where}: {problem}") from exc
    except BaseException:
        outage.answered(etcd.where)  # etcd answered; what went wrong is not an outage
        raise
    outage.answered(etcd.where)


def _without_endpoint(problem: str, etcd: GatewayClient) -> str:
    """The problem without its endpoint when there is only the one `where` names already."""
    endpoints = etcd.connection.endpoints
    if len(endpoints) == 1:
        return problem.removeprefix(f"{endpoints[0]}: ")
    return problem
