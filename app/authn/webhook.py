"""The HTTP webhook backend: ask an SSO bridge over HTTP whether the credentials are good.

POST {"account", "password", "service", "client_ip"} as JSON to the configured URL:
`200 {"groups": [...]}` accepts, `401`/`403` reject, anything else (other statuses, a 200 whose
body is not that JSON, timeouts, refused connections) is an outage: 503, never an accept.
One pooled httpx client reuses connections; outages are retried a bounded number of times;
after `breaker_failures` outages in a row the circuit opens and requests fail fast (503) for
`breaker_reset` seconds, then one trial request decides whether it closes again.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from app.authn.base import AuthResult, Credentials, Outcome, check_groups
from app.authn.breaker import CircuitBreaker
from app.backend_settings import ROBOT_PREFIX, WebhookBackend
from app.errors import BackendUnavailableError, UserStoreError

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def build_client(config: WebhookBackend) -> httpx.AsyncClient:
    """One client per backend: keep-alive connections, timeouts, our CA and mTLS if set."""
    context = ssl.create_default_context(cafile=config.ca_file)
    if config.client_cert is not None:
        context.load_cert_chain(config.client_cert, config.client_key)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        verify=context,
        follow_redirects=False,  # a redirect would resend the password elsewhere
        trust_env=False,  # no proxy from the environment sees passwords
    )


class WebhookAuthenticator:
    def __init__(
        self,
        config: WebhookBackend,
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

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        if not self.breaker.allow(self._clock()):
            raise BackendUnavailableError(
                self._config.label, "circuit open", retry_after=int(self._config.breaker_reset)
            )
        try:
            result = await self._call(credentials)
        except BackendUnavailableError:
            self.breaker.record_failure(self._clock())
            raise
        self.breaker.record_success()
        return result

    async def _call(self, credentials: Credentials) -> AuthResult:
        body = {
            "account": credentials.account,
            "password": credentials.password.get_secret_value(),
            "service": credentials.service,
            "client_ip": credentials.client_ip,
        }
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
            result = _decide(response, credentials.account)
            if result is not None:
                return result
            problem = f"HTTP {response.status_code}"
        raise BackendUnavailableError(self._config.label, problem)

    def _headers(self) -> dict[str, str]:
        if self._secret is None:
            return {}
        return {self._config.secret_header: self._secret.get_secret_value()}


def _decide(response: httpx.Response, account: str) -> AuthResult | None:
    """A decision, or None for an outage."""
    if response.status_code in (401, 403):
        return AuthResult(Outcome.REJECTED)
    if response.status_code != 200:
        return None
    try:
        data: Any = response.json()
    except ValueError:
        data = None
    groups = _groups(data)
    if groups is None:
        log.warning("webhook answered 200 without a JSON object holding a `groups` list")
        return None
    name = _account(data, account)
    if name is None:
        log.warning("webhook answered 200 with an `account` that is no account name")
        return None
    return AuthResult(Outcome.ACCEPTED, name, groups)


def _groups(data: Any) -> frozenset[str] | None:
    # The key itself is required: a bridge saying `200 {"error": "invalid password"}` (or `{}`)
    # has not accepted anyone, and reading it as "no groups" let any password in.
    if not isinstance(data, dict) or "groups" not in data:
        return None
    try:
        return check_groups(data["groups"], "groups")
    except UserStoreError:
        return None


def _account(data: dict[str, Any], typed: str) -> str | None:
    """The account the token is for: the bridge's own spelling when it says one (an SSO that
    takes `ALICE` as alice must say `alice`, or ACL rules written for alice miss the login),
    else the name as typed. None for a spelling no account could have."""
    name = data.get("account", typed)
    if (
        not isinstance(name, str)
        or not name
        or name != name.strip()
        or not name.isprintable()
        or name.startswith(ROBOT_PREFIX)  # robots are the robot store's alone
    ):
        return None
    return name
