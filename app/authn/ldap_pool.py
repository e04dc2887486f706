"""A small pool of open LDAP connections for worker threads.

Opening a connection costs a TCP (and TLS) handshake plus a bind; reusing one costs a bind.
At most `size` connections exist at once; a thread that waits longer than `timeout` for one
gets PoolExhaustedError (the caller reports an outage). A connection that failed is dropped.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ldap3 import Connection
from ldap3.core.exceptions import LDAPException


class PoolExhaustedError(LDAPException):
    """Every connection stayed busy for the whole timeout."""


@dataclass(slots=True)
class Pooled:
    connection: Connection
    reused: bool
    bound_as: str | None = None  # the DN this connection is bound as now (None: anonymous)
    broken: bool = False  # not to be handed out again (its socket may have been shut down)


class LdapPool:
    def __init__(self, opener: Callable[[], Connection], size: int, timeout: float) -> None:
        self._opener = opener
        self._timeout = timeout
        self._idle: deque[Pooled] = deque()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self, *, fresh: bool = False) -> Iterator[Pooled]:
        if not self._slots.acquire(timeout=self._timeout):
            raise PoolExhaustedError("no LDAP connection free")
        try:
            pooled = self._take(fresh)
            try:
                yield pooled
            except BaseException:
                _close(pooled)
                raise
            self._give_back(pooled)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for pooled in idle:
            _close(pooled)

    def _take(self, fresh: bool) -> Pooled:
        with self._lock:
            pooled = self._idle.pop() if self._idle and not fresh else None
        if pooled is not None:
            pooled.reused = True
            return pooled
        return Pooled(self._opener(), reused=False)

    def _give_back(self, pooled: Pooled) -> None:
        if pooled.broken:
            _close(pooled)
            return
        if pooled.connection.closed:
            return
        with self._lock:
            self._idle.append(pooled)


def _close(pooled: Pooled) -> None:
    """Unbind, and close the socket whatever unbind managed: on a connection shut down under
    it (LdapAuthenticator's bound on a check) ldap3 fails to send and leaves the socket open."""
    with contextlib.suppress(Exception):
        pooled.connection.unbind()
    sock = getattr(pooled.connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
