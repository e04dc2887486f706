"""The HTTP webhook backend: ask an SSO bridge over HTTP whether the credentials are good.

POST {"account", "password", "service", "client_ip"} as JSON to the configured URL:
`200 {"groups": [...]}` accepts, `401`/`403` reject, anything else (other statuses, a 200 whose
body is not that JSON, timeouts, refused connections) is an outage: 503, never an accept.
The HTTP side (pooled client, retries, circuit breaker) is app.http_hook: outages are retried;
after `breaker_failures` outages in a row the circuit opens and requests fail fast (503) for
`breaker_reset` seconds, then one trial request decides whether it closes again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from app.authn.base import AuthResult, Credentials, Outcome, check_groups
from app.backend_settings import ROBOT_PREFIX, WebhookBackend
from app.errors import BackendUnavailableError, UserStoreError
from app.http_hook import HookClient, HookDown

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class WebhookAuthenticator:
    def __init__(
        self,
        config: WebhookBackend,
        *,
        key: str = "auth_backends[]",
        secret: SecretStr | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        self._hook = HookClient(config, key=key, secret=secret, client=client, clock=clock)
        self.breaker = self._hook.breaker

    async def aclose(self) -> None:
        await self._hook.aclose()

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        body = {
            "account": credentials.account,
            "password": credentials.password.get_secret_value(),
            "service": credentials.service,
            "client_ip": credentials.client_ip,
        }
        account = credentials.account
        try:
            return await self._hook.post(body, lambda response: _decide(response, account))
        except HookDown as exc:
            raise BackendUnavailableError(
                self._config.label, exc.problem, retry_after=exc.retry_after
            ) from None


def _decide(response: httpx.Response, account: str) -> AuthResult | None:
    """A decision, or None for an outage."""
    if response.status_code in (401, 403):
        return AuthResult(Outcome.REJECTED)
    if response.status_code != 200:
        return None
    try:
        data: Any = response.json()
    except (ValueError, RecursionError):  # nested past the parser's depth: not an answer
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
