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
from app.errors import AuthenticationError, BackendUnavailableError, TooManyAttemptsError
from app.metrics import count, metrics
from app.protocol.scopes import shown
from app.state.attempts import LoginThrottle, Verdict, counter_keys

log = logging.getLogger(__name__)
_ACCOUNT_SHOWN = 128  # characters of an account name in a log line

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
        # Passwords being checked per counter key (a pair's, an address's), and what wakes
        # the attempts waiting for one of them to finish (see _full).
        self._checking: dict[str, int] = {}
        self._finished: dict[str, asyncio.Event] = {}
        # Per turn, the accounts whose check met an outage (the backend down or timing out):
        # the same account's attempts queued behind it are answered that 503 at once, not each
        # after its own timeout (30 logins behind a hung directory waited 2 s more each, the
        # last a minute). Only the same account's: another, behind the same address, may be
        # one an earlier backend answers, which is up.
        self._outages: dict[str, dict[str, BackendUnavailableError]] = {}

    async def check(self, credentials: Credentials) -> AuthResult:
        """The accepted result; TooManyAttemptsError (429) or AuthenticationError (401)."""
        throttle, where = self.throttle, credentials.client_ip
        if throttle is None:
            return await self._attempt(credentials, None, None, credentials.account)
        counted = credentials.account  # the name the counters know the login by
        if self._counted_as is not None:
            counted = self._counted_as(counted)  # LDAP: CAROL and carol count as one
        verdict = await self._verdict(throttle, counted, where)
        keys = counter_keys(counted, where)
        checking = self._checking
        # Nearly every login: no failure on record and no check running (a cached one never
        # waits), so room for it. Counted inline: this runs on every pull and push.
        if not checking and not verdict.one_at_a_time:
            pair_key, ip_key = keys
            checking[pair_key] = checking.get(pair_key, 0) + 1
            checking[ip_key] = checking.get(ip_key, 0) + 1
            try:
                return await self._attempt(credentials, throttle, verdict, counted)
            finally:
                self._ended(keys)
        while not verdict.one_at_a_time:  # no failure on record
            full = self._full(throttle, verdict, keys, where)
            if full is None:
                return await self._checked(credentials, throttle, verdict, counted, keys)
            # A crowd from there, nothing on record yet: as many checks at once as could
            # still fail before the block. Judged all at once, a first burst of guesses was
            # checked in full before the first failure was counted. Wait for one to finish
            # (its failure, if it failed, is on record then), and judge again.
            await self._finished.setdefault(full, asyncio.Event()).wait()
            verdict = await self._verdict(throttle, counted, where)
        # Failures on record: attempts from there take turns, each judged on the counters the
        # ones before it left. Judged all at once, 200 parallel guesses were all checked before
        # the first failure was counted (README: "the password is not even checked").
        # The delay is waited out before the turn, all at once: in turn, a crowd behind one
        # NAT address would wait one delay after another.
        waited = (
            verdict.delay if verdict.retry_after is None and await self._delay(verdict) else 0.0
        )
        turn = keys[1] if verdict.ip_suspect else keys[0]
        lock = self._turns.setdefault(turn, asyncio.Lock())
        stale = waited > 0 or lock.locked()  # else taken at once: the counters just read hold
        self._waiting[turn] += 1
        try:
            async with lock:
                if (outage := self._outages.get(turn, {}).get(keys[0])) is not None:
                    raise BackendUnavailableError(outage.backend, outage.cause, outage.retry_after)
                try:
                    return await self._in_turn(
                        credentials, throttle, verdict, counted, keys, stale=stale, waited=waited
                    )
                except BackendUnavailableError as exc:  # until the queue is gone: then asked
                    self._outages.setdefault(turn, {})[keys[0]] = exc
                    raise
        finally:
            self._waiting[turn] -= 1
            if not self._waiting[turn]:
                del self._waiting[turn], self._turns[turn]
                self._outages.pop(turn, None)

    async def _in_turn(
        self,
        credentials: Credentials,
        throttle: LoginThrottle,
        verdict: Verdict,
        counted: str,
        keys: tuple[str, str],
        *,
        stale: bool,
        waited: float,
    ) -> AuthResult:
        """An attempt whose turn has come (check)."""
        where = credentials.client_ip
        if stale:
            verdict = await self._verdict(throttle, counted, where)
        # Checks still running from before (the first burst's): their failures are not on
        # record yet, and could reach the block with this one.
        while not verdict.blocked and (full := self._full(throttle, verdict, keys, where)):
            await self._finished.setdefault(full, asyncio.Event()).wait()
            verdict = await self._verdict(throttle, counted, where)
        # One account's guesses from one address, in turn, each wait what the failures before
        # them call for, as one after another would (they waited the first delay together).
        # Not an address's crowd: each account there has its own.
        if not verdict.ip_suspect and not verdict.blocked and verdict.delay > waited:
            count(metrics().throttles.labels("delayed"))
            await self._sleep(verdict.delay - waited)
            verdict = await self._verdict(throttle, counted, where)
        return await self._checked(credentials, throttle, verdict, counted, keys, wait=False)

    def _full(
        self,
        throttle: LoginThrottle,
        verdict: Verdict,
        keys: tuple[str, str],
        where: str | None,
    ) -> str | None:
        """The counter with no room for another check now (None: there is room): its checks
        running and its failures on record would reach its block. So a burst never gets more
        checks than the block allows, and a crowd of good logins (a CI farm behind one NAT
        address) runs at once up to it."""
        policy, checking = throttle.policy, self._checking
        pair_key, ip_key = keys
        if checking.get(pair_key, 0) + verdict.pair_failures >= policy.account_ip_block:
            return pair_key
        if checking.get(ip_key, 0) + verdict.ip_failures >= policy.ip_block and not (
            throttle.shared(where)
        ):
            return ip_key
        return None

    async def _checked(
        self,
        credentials: Credentials,
        throttle: LoginThrottle,
        verdict: Verdict,
        counted: str,
        keys: tuple[str, str],
        *,
        wait: bool = True,
    ) -> AuthResult:
        """_attempt, counted as a check running on both keys; waiters woken as it ends."""
        checking = self._checking
        for key in keys:
            checking[key] = checking.get(key, 0) + 1
        try:
            return await self._attempt(credentials, throttle, verdict, counted, wait=wait)
        finally:
            self._ended(keys)

    def _ended(self, keys: tuple[str, str]) -> None:
        checking, finished = self._checking, self._finished
        for key in keys:
            left = checking[key] - 1
            if left:
                checking[key] = left
            else:
                del checking[key]
            if finished:
                event = finished.pop(key, None)
                if event is not None:
                    event.set()

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
                log.info(
                    "login of %s from %s blocked: too many failures",
                    _shown(account),
                    where or "an unknown address",
                )
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
            log.info("authentication failed for account %s: %s", _shown(account), why)
            if throttle is not None and result.outcome not in _NO_GUESS:
                await anyio.to_thread.run_sync(throttle.failed, counted, where)
            raise AuthenticationError(self._realm, reason=why)
        if throttle is not None and verdict is not None and verdict.pair_failures:
            await anyio.to_thread.run_sync(throttle.succeeded, counted, where, verdict)
        return result


# Refusals of a right secret: an expired robot or token, an account without its name. They
# guess nothing, so they are not counted (a stale CI token, counted against the shared `ci`,
# blocked every job of its runner).
_NO_GUESS = frozenset({Outcome.EXPIRED, Outcome.UNNAMED})

# Why a login failed, for the operator: a backend that knows the account refused the secret
# (an expired robot too: the service log names it), or none knows the account.
_WHY = {
    Outcome.REJECTED: "wrong password",
    Outcome.NOT_MINE: "unknown account",
    Outcome.EXPIRED: "expired account",
    Outcome.UNNAMED: "the password is right but the account has no name (see the log)",
    Outcome.SHADOWED: "another spelling of an account an earlier backend holds",
}


@functools.cache  # labels() takes a lock and builds a key on every call
def _password_checks(accepted: bool) -> Any:
    return metrics().password_checks.labels("accepted" if accepted else "rejected")


def _shown(account: str) -> str:
    """A client's account name for a log line: quoted, and cut (a Basic header may carry
    one of kilobytes, written on every failed try)."""
    return shown(account, _ACCOUNT_SHOWN)
