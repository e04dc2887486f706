"""A password check behind the brute-force counters: a blocked login is refused before any
backend is asked, a suspicious one waits first, and the outcome is counted. Knows no HTTP."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from app.authn.base import Authenticator, AuthResult, Credentials, Outcome, ThrottleNames
from app.errors import AuthenticationError, TooManyAttemptsError
from app.metrics import count, metrics
from app.state.attempts import LoginThrottle

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class GuardedLogin:
    """The authenticator (None: nobody logs in) behind the throttle (None: no counters)."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        throttle: LoginThrottle | None,
        *,
        realm: str,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.authenticator = authenticator
        self.throttle = throttle
        self._realm = realm
        self._sleep = sleep
        self._counted_as = (
            authenticator.throttle_name if isinstance(authenticator, ThrottleNames) else None
        )

    async def check(self, credentials: Credentials) -> AuthResult:
        """The accepted result; TooManyAttemptsError (429) or AuthenticationError (401)."""
        throttle, account, where = self.throttle, credentials.account, credentials.client_ip
        counted = account  # the name the counters know the login by
        verdict = None
        if throttle is not None:
            if self._counted_as is not None:
                counted = self._counted_as(account)  # LDAP: CAROL and carol count as one
            # Nearly always answered at once, on the event loop: a hop to a worker thread and
            # back would cost more than the read (it was a third of a cached login's CPU).
            verdict = throttle.check_now(counted, where)
            if verdict is None:  # counters to read from etcd
                verdict = await anyio.to_thread.run_sync(throttle.check, counted, where)
            if verdict.retry_after is not None:
                count(metrics().throttles.labels("blocked"))
                log.info("login of %r from %s blocked: too many failures", account, where)
                raise TooManyAttemptsError(verdict.retry_after)
            if verdict.delay > 0:
                count(metrics().throttles.labels("delayed"))
                await self._sleep(verdict.delay)
        if self.authenticator is None:
            result = AuthResult(Outcome.NOT_MINE)
        else:
            result = await self.authenticator.authenticate(credentials)
        count(_password_checks(result.accepted))
        if not result.accepted:
            log.info("authentication failed for account %r", account)
            if throttle is not None:
                await anyio.to_thread.run_sync(throttle.failed, counted, where)
            raise AuthenticationError(self._realm)
        if throttle is not None and verdict is not None and verdict.pair_failures:
            await anyio.to_thread.run_sync(throttle.succeeded, counted, where, verdict)
        return result


@functools.cache  # labels() takes a lock and builds a key on every call
def _password_checks(accepted: bool) -> Any:
    return metrics().password_checks.labels("accepted" if accepted else "rejected")
