"""A password check behind the brute-force counters: a blocked login is refused before any
backend is asked, a suspicious one waits first, and the outcome is counted. Knows no HTTP."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from app.authn.base import Authenticator, AuthResult, Credentials, Outcome, ThrottleNames
from app.errors import AuthenticationError, TooManyAttemptsError
from app.metrics import count, metrics
from app.state.attempts import LoginThrottle, Verdict, counter_keys

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
        # Attempts with failures on record, one at a time per counter (see check).
        self._turns: dict[str, asyncio.Lock] = {}
        self._waiting: collections.Counter[str] = collections.Counter()
        # Checks in flight per counter key (a pair's, an address's), to bound a first burst.
        self._running: collections.Counter[str] = collections.Counter()

    async def check(self, credentials: Credentials) -> AuthResult:
        """The accepted result; TooManyAttemptsError (429) or AuthenticationError (401)."""
        throttle, where = self.throttle, credentials.client_ip
        if throttle is None:
            return await self._attempt(credentials, None, None, credentials.account)
        counted = credentials.account  # the name the counters know the login by
        if self._counted_as is not None:
            counted = self._counted_as(counted)  # LDAP: CAROL and carol count as one
        verdict = await self._verdict(throttle, counted, where)
        pair_key, ip_key = counter_keys(counted, where)
        turn = self._turn(throttle, verdict, pair_key, ip_key, where)
        running = self._running
        running[pair_key] += 1
        running[ip_key] += 1
        try:
            if turn is None:  # nearly every login: nothing on record, no crowd
                return await self._attempt(credentials, throttle, verdict, counted)
            return await self._in_turn(credentials, throttle, verdict, counted, turn)
        finally:
            for key in (pair_key, ip_key):
                running[key] -= 1
                if not running[key]:
                    del running[key]

    def _turn(
        self,
        throttle: LoginThrottle,
        verdict: Verdict,
        pair_key: str,
        ip_key: str,
        where: str | None,
    ) -> str | None:
        """The counter whose attempts this one waits its turn behind; None: checked at once.
        With failures on record, attempts take turns, each judged on the counters the ones
        before it left: judged all at once, 200 parallel guesses were all checked before the
        first failure was counted (README: "the password is not even checked"). With nothing
        on record, as many run at once as the free allowance (`*_free`), the rest take turns:
        a first burst of guesses could otherwise all be checked before any was counted. Same
        credentials in parallel (a CI host's jobs) cost one check (the credential cache), so
        their turns pass at once."""
        if verdict.one_at_a_time:
            return ip_key if verdict.ip_suspect else pair_key
        # At least one at once: with a free allowance of 0 every login would wait its turn.
        policy, running = throttle.policy, self._running
        if running[pair_key] >= max(1, policy.account_ip_free):
            return pair_key
        if running[ip_key] >= max(1, policy.ip_free) and not throttle.shared(where):
            return ip_key
        return None

    async def _in_turn(
        self,
        credentials: Credentials,
        throttle: LoginThrottle,
        verdict: Verdict,
        counted: str,
        turn: str,
    ) -> AuthResult:
        # The delay is waited out before the turn, all at once: in turn, a crowd behind one
        # NAT address would wait one delay after another.
        slept = verdict.retry_after is None and await self._delay(verdict)
        lock = self._turns.setdefault(turn, asyncio.Lock())
        stale = slept or lock.locked()  # else taken at once: the counters just read still hold
        self._waiting[turn] += 1
        try:
            async with lock:
                if stale:
                    verdict = await self._verdict(throttle, counted, credentials.client_ip)
                return await self._attempt(credentials, throttle, verdict, counted, wait=False)
        finally:
            self._waiting[turn] -= 1
            if not self._waiting[turn]:
                del self._waiting[turn], self._turns[turn]

    @staticmethod
    async def _verdict(throttle: LoginThrottle, counted: str, where: str | None) -> Verdict:
        # Nearly always answered at once, on the event loop: a hop to a worker thread and
        # back would cost more than the read (it was a third of a cached login's CPU).
        verdict = throttle.check_now(counted, where)
        if verdict is None:  # counters to read from etcd
            verdict = await anyio.to_thread.run_sync(throttle.check, counted, where)
        return verdict

    async def _delay(self, verdict: Verdict) -> bool:
        """Wait the delay the counters call for; whether there was one."""
        if verdict.delay <= 0:
            return False
        count(metrics().throttles.labels("delayed"))
        await self._sleep(verdict.delay)
        return True

    async def _attempt(
        self,
        credentials: Credentials,
        throttle: LoginThrottle | None,
        verdict: Verdict | None,
        counted: str,
        *,
        wait: bool = True,
    ) -> AuthResult:
        account, where = credentials.account, credentials.client_ip
        if verdict is not None:
            if verdict.retry_after is not None:
                count(metrics().throttles.labels("blocked"))
                log.info("login of %r from %s blocked: too many failures", account, where)
                raise TooManyAttemptsError(verdict.retry_after, verdict.address_blocked)
            if wait:
                await self._delay(verdict)
        if self.authenticator is None:
            result = AuthResult(Outcome.NOT_MINE)
        else:
            result = await self.authenticator.authenticate(credentials)
        count(_password_checks(result.accepted))
        if not result.accepted:
            why = _WHY[result.outcome]
            log.info("authentication failed for account %r: %s", account, why)
            if throttle is not None:
                await anyio.to_thread.run_sync(throttle.failed, counted, where)
            raise AuthenticationError(self._realm, reason=why)
        if throttle is not None and verdict is not None and verdict.pair_failures:
            await anyio.to_thread.run_sync(throttle.succeeded, counted, where, verdict)
        return result


# Why a login failed, for the operator: a backend that knows the account refused the secret
# (an expired robot too: the service log names it), or none knows the account.
_WHY = {Outcome.REJECTED: "wrong password", Outcome.NOT_MINE: "unknown account"}


@functools.cache  # labels() takes a lock and builds a key on every call
def _password_checks(accepted: bool) -> Any:
    return metrics().password_checks.labels("accepted" if accepted else "rejected")
