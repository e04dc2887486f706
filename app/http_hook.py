"""Asking a service over HTTP(S) with a JSON POST (the webhook backend, the authorization
webhook): one pooled httpx client (keep-alive, our CA, optional mTLS, no redirects, no proxy
from the environment), a shared secret header, a bounded number of retries after an outage,
and a circuit breaker: after `breaker_failures` outages in a row, calls fail fast for
`breaker_reset` seconds, then one trial call decides whether it closes again.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from app.backend_settings import HttpHook
from app.breaker import CircuitBreaker

Clock = Callable[[], float]
T = TypeVar("T")


class HookDown(Exception):  # noqa: N818 - a condition, not a programming error
    """No usable answer: the circuit is open, or every try failed. `problem` says why (never
    the request, which may hold a password)."""

    def __init__(self, problem: str, retry_after: int = 5) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


def build_client(config: HttpHook) -> httpx.AsyncClient:
    """One client per hook: keep-alive connections, timeouts, our CA and mTLS if set."""
    context = ssl.create_default_context(cafile=config.ca_file)
    if config.client_cert is not None:
        context.load_cert_chain(config.client_cert, config.client_key)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        verify=context,
        follow_redirects=False,  # a redirect would resend the body (a password) elsewhere
        trust_env=False,  # no proxy from the environment sees what we send
    )


class HookClient:
    def __init__(
        self,
        config: HttpHook,
        *,
        secret: SecretStr | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        self._secret = secret
        self._client = client if client is not None else build_client(config)
        self._clock = clock
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, body: dict[str, Any], decide: Callable[[httpx.Response], T | None]) -> T:
        """POST `body`; `decide` reads an answer (None: not one, an outage). HookDown when no
        try gave an answer, or the circuit is open."""
        if not self.breaker.allow(self._clock()):
            raise HookDown("circuit open", retry_after=int(self._config.breaker_reset))
        problem = "no answer"
        for _ in range(self._config.retries + 1):
            try:
                response = await self._client.post(
                    self._config.url, json=body, headers=self._headers()
                )
            except httpx.TimeoutException:
                problem = "timeout"
                continue
            except httpx.HTTPError as exc:
                problem = type(exc).__name__  # never str(exc): it may quote the request
                continue
            result = decide(response)
            if result is not None:
                self.breaker.record_success()
                return result
            problem = f"HTTP {response.status_code}"
        self.breaker.record_failure(self._clock())
        raise HookDown(problem)

    def _headers(self) -> dict[str, str]:
        if self._secret is None:
            return {}
        return {self._config.secret_header: self._secret.get_secret_value()}
