"""Asking a service over HTTP(S) with a JSON POST (the webhook backend, the authorization
webhook): one pooled httpx client (keep-alive, our CA, optional mTLS, no redirects, no proxy
from the environment), a shared secret header, a bounded number of retries after an outage,
and a circuit breaker: after `breaker_failures` outages in a row, calls fail fast for
`breaker_reset` seconds, then one trial call decides whether it closes again.

tls_context serves every client here that takes a `ca_file` (LDAP and the jwt backend too):
a file that cannot be used stops the start with one line naming the setting.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from app.backend_settings import HttpHook
from app.breaker import CircuitBreaker
from app.errors import ConfigError

Clock = Callable[[], float]
T = TypeVar("T")
MAX_ANSWER = 1024 * 1024  # bytes of an answer: a decision and a list of groups


class _AnswerTooLargeError(Exception):
    """The answer went past MAX_ANSWER bytes."""


class _AnswerEncodedError(Exception):
    """The answer came compressed although it was asked for uncompressed."""


class HookDown(Exception):  # noqa: N818 - a condition, not a programming error
    """No usable answer: the circuit is open, or every try failed. `problem` says why (never
    the request, which may hold a password)."""

    def __init__(self, problem: str, retry_after: int = 5) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


def tls_context(
    key: str,
    ca_file: Path | None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> ssl.SSLContext:
    """A client TLS context trusting `ca_file` (system CAs without it), with the mTLS pair if
    given; a file that cannot be used is a ConfigError naming `key`'s setting."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key}.ca_file", f"{ca_file}: {_why(exc)}") from None
    if client_cert is not None:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{key}.client_cert", f"{client_cert}: {_why(exc)}") from None
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    return str(exc.strerror or exc) if isinstance(exc, OSError) else str(exc)


def build_client(config: HttpHook, key: str) -> httpx.AsyncClient:
    """One client per hook: keep-alive connections, timeouts, our CA and mTLS if set."""
    context = tls_context(key, config.ca_file, config.client_cert, config.client_key)
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
        key: str,
        secret: SecretStr | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        self._secret = secret
        self._client = client if client is not None else build_client(config, key)
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
                # httpx's timeout bounds each read: a service trickling its answer would hold
                # the request for as long as it likes without a bound on the whole try.
                async with asyncio.timeout(2 * self._config.timeout):
                    response = await self._answer(body)
            except (httpx.TimeoutException, TimeoutError):
                problem = "timeout"
                continue
            except httpx.HTTPError as exc:
                problem = type(exc).__name__  # never str(exc): it may quote the request
                continue
            except _AnswerTooLargeError:
                problem = f"an answer larger than {MAX_ANSWER} bytes"
                continue
            except _AnswerEncodedError as exc:
                problem = f"an answer compressed ({exc}) though asked for uncompressed"
                continue
            result = decide(response)
            if result is not None:
                self.breaker.record_success()
                return result
            problem = f"HTTP {response.status_code}"
        self.breaker.record_failure(self._clock())
        raise HookDown(problem)

    async def _answer(self, body: dict[str, Any]) -> httpx.Response:
        """The answer, its body read up to MAX_ANSWER bytes (then _AnswerTooLargeError: read
        whole, a bridge answering with megabytes of groups held them all in every worker).
        Read as sent: a compressed answer is refused (_AnswerEncodedError), since inflating
        even one chunk of it could take a thousand times its size."""
        request = self._client.build_request(
            "POST", self._config.url, json=body, headers=self._headers()
        )
        response = await self._client.send(request, stream=True)
        try:
            encoding = response.headers.get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                raise _AnswerEncodedError(encoding[:40])
            content = bytearray()
            async for chunk in response.aiter_raw():
                content += chunk
                if len(content) > MAX_ANSWER:
                    raise _AnswerTooLargeError
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code, headers=response.headers, content=bytes(content)
        )

    def _headers(self) -> dict[str, str]:
        # Uncompressed: the size bound counts the bytes as sent (_answer).
        plain = {"Accept-Encoding": "identity"}
        if self._secret is None:
            return plain
        return {**plain, self._config.secret_header: self._secret.get_secret_value()}
