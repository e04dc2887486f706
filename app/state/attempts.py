"""Brute-force protection: failed logins counted per (account, client IP) and per client IP.

A lockout per account alone lets anyone lock a CI account out by guessing at it; here the
counters are keyed by where the guesses come from, so the real user, logging in from their own
address, is never slowed by an attacker elsewhere. After `*_free` failures every further attempt
waits (initial_delay doubled per failure, capped); after `*_block` failures the answer is 429
with Retry-After until `window` seconds after the latest failure. A success resets the
(account, IP) counter only: resetting the per-IP one would let an attacker holding any valid
account wipe their address's record by logging in with it.

Counters live in the state store (SQLite, or etcd shared by every instance). A store that
cannot be reached fails open (logged): an outage of the counters must not lock everyone out;
with a `fallback` (this process's memory) failures are counted there meanwhile.
Time is a parameter; keys are hashed, so a store never holds account names or addresses.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from app.errors import StateStoreError
from app.log_limit import LogEvery
from app.settings_sections import BruteForceSettings, Network

if TYPE_CHECKING:
    from app.state.memory import MemoryFailureStore

log = logging.getLogger(__name__)
# While the store is down every login would say it: once a minute, with a count.
_outage_log = LogEvery(log)

Clock = Callable[[], float]
# FailureStore.failures or .failures_now: (keys, now, window) -> the live counters.
_Read = Callable[[list[str], float, int], "dict[str, FailureCount] | None"]


@dataclass(frozen=True, slots=True)
class FailureCount:
    count: int
    last_at: float

    def plus(self, other: FailureCount | None) -> FailureCount:
        """Both counts of failures (each counted in one place only), the latest time."""
        if other is None:
            return self
        return FailureCount(self.count + other.count, max(self.last_at, other.last_at))


class FailureStore(Protocol):
    """Counters of failed logins. Methods raise StateStoreError when the store is unusable."""

    def failures(self, keys: list[str], now: float, window: int) -> dict[str, FailureCount]:
        """The live counters among `keys` (last failure within `window` seconds)."""
        ...

    def failures_now(
        self, keys: list[str], now: float, window: int
    ) -> dict[str, FailureCount] | None:
        """What `failures` answers, when it can be answered in microseconds without a network
        call, so on the event loop (memory, a local file, counters etcd gave moments ago);
        None when only `failures`, in a worker thread, can answer."""
        ...

    def add_failure(self, keys: list[str], now: float, window: int) -> None:
        """Count one failure on each key; a counter idle longer than `window` restarts at 1."""
        ...

    def reset(self, key: str) -> None: ...

    def close(self) -> None:
        """Let go of connections kept between calls (the etcd store's)."""
        ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a login attempt before checking its password."""

    delay: float = 0.0
    retry_after: int | None = None  # set: refuse with 429
    pair_failures: int = 0
    ip_failures: int = 0
    ip_suspect: bool = False  # the address has reached `ip_free` failures
    address_blocked: bool = False  # the block is the address's (every account from there)

    @property
    def one_at_a_time(self) -> bool:
        """Failures on record: attempts from there take turns (GuardedLogin)."""
        return self.pair_failures > 0 or self.ip_suspect

    @property
    def blocked(self) -> bool:
        return self.retry_after is not None


NO_FAILURES = Verdict()  # no counter on record (nearly every login): no delay, no block


@functools.lru_cache(maxsize=4096)  # asked on every login; the same pairs log in again and again
def counter_keys(account: str, client_ip: str | None) -> tuple[str, str]:
    """(pair key, IP key): hashes, so the store holds neither names nor addresses."""
    where = _counted_where(client_ip)
    return _hash("pair", account, where), _hash("ip", where)


def _counted_where(client_ip: str | None) -> str:
    """The address a failure counts against; an IPv6 client by its /64, the network one host
    is given (counted per address, it could guess from 2**64 of them)."""
    if client_ip is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return client_ip


def judge(
    pair: FailureCount | None, ip: FailureCount | None, policy: BruteForceSettings, now: float
) -> Verdict:
    """Pure: the delay or block these counters call for."""
    limits = ((pair, policy.account_ip_free, policy.account_ip_block),
              (ip, policy.ip_free, policy.ip_block))  # fmt: skip
    delay, retry_after = 0.0, None
    for counter, free, block in limits:
        if counter is None:
            continue
        if counter.count >= block:
            left = max(1, math.ceil(counter.last_at + policy.window - now))
            retry_after = max(retry_after or 0, left)
        elif counter.count >= free:
            step = policy.initial_delay * 2 ** (counter.count - free)
            delay = max(delay, min(step, policy.max_delay))
    ip_failures = ip.count if ip is not None else 0
    ip_suspect = ip_failures >= policy.ip_free
    address_blocked = ip_failures >= policy.ip_block
    pair_failures = pair.count if pair is not None else 0
    return Verdict(delay, retry_after, pair_failures, ip_failures, ip_suspect, address_blocked)


class LoginThrottle:
    """The policy over a store. Blocking calls: run them in a worker thread."""

    def __init__(
        self,
        store: FailureStore,
        policy: BruteForceSettings,
        clock: Clock,
        fallback: MemoryFailureStore | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock
        # Where failures are counted while the store cannot be reached (this process's memory):
        # an outage (or an attacker slowing etcd) must not make guessing free. Judged together
        # with the store from the first such failure on.
        self._fallback = fallback
        self._fallback_used = False
        self._handing_back = threading.Lock()  # one thread at a time writes them to the store
        networks = tuple(policy.shared_networks)
        self.shared: Callable[[str | None], bool] = (
            functools.lru_cache(maxsize=4096)(functools.partial(within_networks, networks))
            if networks
            else _nowhere
        )

    def keys(self, account: str, client_ip: str | None) -> list[str]:
        """The counters a login from there is judged on and counted in: the pair's, and the
        address's unless it is a shared one."""
        pair_key, ip_key = counter_keys(account, client_ip)
        return [pair_key] if self.shared(client_ip) else [pair_key, ip_key]

    def check(self, account: str, client_ip: str | None) -> Verdict:
        """The verdict; may ask the store over the network: run it in a worker thread."""
        self.hand_back()
        verdict = self._check(self.store.failures, account, client_ip)
        return NO_FAILURES if verdict is None else verdict  # `failures` always answers

    def holds_failures(self) -> bool:
        """Whether failures counted in memory (a store outage) wait to go back to it."""
        return self._fallback_used

    def hand_back(self) -> None:
        """Once the store answers again, the failures counted in memory meanwhile go to it, a
        batch per call: kept in memory, they outlived the outage by the whole window, where no
        other instance saw them and `logins reset` could not clear them. Each key's count is
        cut at the highest block (more changes no verdict), and dated now: at its own older
        time, it moved back the store's latest failure, and so ended another instance's block
        early. Taken from memory once written: a login meanwhile sees it in both places
        rather than in neither (taken first, a blocked client's guesses were checked for the
        whole of a hung etcd's timeout). Blocking: a worker thread's."""
        fallback = self._fallback
        if not self._fallback_used or fallback is None:
            return
        if not self._handing_back.acquire(blocking=False):
            return  # another thread is at it
        try:
            now, window = self._clock(), self.policy.window
            most = max(self.policy.account_ip_block, self.policy.ip_block)
            budget = HAND_BACK_BATCH
            for key, counted in fallback.live(now, window).items():
                needed = min(counted.count, most)  # the rest changes no verdict: dropped
                writes = min(needed, budget)
                written = 0
                try:
                    while written < writes:
                        self.store.add_failure([key], now, window)
                        written += 1
                except StateStoreError:
                    fallback.take(key, written)  # those are in the store now
                    return  # still down: the rest stays in memory, judged with the store's
                fallback.take(key, counted.count if writes == needed else writes)
                budget -= writes
                if budget <= 0:
                    return
            self._fallback_used = False  # then again, if a failure came meanwhile
            if fallback.live(now, window):
                self._fallback_used = True
        finally:
            self._handing_back.release()

    def check_now(self, account: str, client_ip: str | None) -> Verdict | None:
        """The verdict, if the store can give the counters without a network call (nearly
        every login: see FailureStore.failures_now); None: run `check` in a worker thread."""
        if self._fallback_used:
            return None  # `check`, in a worker thread, hands back what memory holds first
        return self._check(self.store.failures_now, account, client_ip)

    def _check(self, read: _Read, account: str, client_ip: str | None) -> Verdict | None:
        keys = self.keys(account, client_ip)
        now, window = self._clock(), self.policy.window
        try:
            found = read(keys, now, window)
        except StateStoreError as exc:
            meanwhile = _MEANWHILE if self._fallback is not None else ", not throttling"
            _outage_log.log(
                logging.WARNING, "read", "brute-force counters unavailable%s: %s", meanwhile, exc
            )
            found = {}
        if found is None:
            return None
        if self._fallback_used and self._fallback is not None:
            found = _added(found, self._fallback.failures(keys, now, window))
        if not found:  # the usual answer: nothing to judge
            return NO_FAILURES
        ip = found.get(keys[1]) if len(keys) > 1 else None
        return judge(found.get(keys[0]), ip, self.policy, now)

    def failed(self, account: str, client_ip: str | None) -> None:
        keys, now = self.keys(account, client_ip), self._clock()
        try:
            self.store.add_failure(keys, now, self.policy.window)
            self.hand_back()
        except StateStoreError as exc:
            if self._fallback is not None:
                self._fallback.add_failure(keys, now, self.policy.window)
                self._fallback_used = True
                _outage_log.log(
                    logging.WARNING,
                    "count",
                    "brute-force counters unavailable, failure counted in memory: %s",
                    exc,
                )
                return
            _outage_log.log(
                logging.WARNING,
                "count",
                "brute-force counters unavailable, failure not counted: %s",
                exc,
            )

    def succeeded(self, account: str, client_ip: str | None, verdict: Verdict) -> None:
        if verdict.pair_failures == 0:
            return  # nothing to reset: no write on the hot path of a good login
        pair_key = counter_keys(account, client_ip)[0]
        if self._fallback_used and self._fallback is not None:
            self._fallback.reset(pair_key)
        try:
            self.store.reset(pair_key)
        except StateStoreError as exc:
            _outage_log.log(
                logging.WARNING, "reset", "brute-force counters unavailable, not reset: %s", exc
            )


_MEANWHILE = ", counting failures in this process's memory meanwhile"
HAND_BACK_BATCH = 64  # failures written back to the store per login, once it is back


def _added(
    stored: dict[str, FailureCount], local: dict[str, FailureCount]
) -> dict[str, FailureCount]:
    """The store's counters plus those kept in memory while it was unavailable (each failure
    is in one of them only)."""
    if not local:
        return stored
    both = dict(stored)
    for key, mine in local.items():
        both[key] = mine.plus(both.get(key))
    return both


def within_networks(networks: tuple[Network, ...], client_ip: str | None) -> bool:
    """Whether the address is in one of the networks (an IPv4-mapped IPv6 address as IPv4)."""
    if client_ip is None:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _nowhere(_client_ip: str | None) -> bool:
    return False


def _hash(*parts: str) -> str:
    encoded = [part.encode("utf-8", "surrogateescape") for part in parts]
    message = b"".join(len(part).to_bytes(4, "big") + part for part in encoded)
    return hashlib.sha256(message).hexdigest()
