"""The authorization webhook: the ACL's grant, narrowed further by an HTTP service.

After the ACL (or the built-in policy) has decided, the scopes it granted anything on are
POSTed as JSON: {"account", "groups", "service", "client_ip", "scopes": [{"type", "name",
"actions"}]}, `actions` being what the ACL granted. The service answers 200 {"scopes": [...]}
in the same shape with the actions it allows; what it leaves out is not granted, and what it
adds is ignored: the token holds what both allow. `"*"` in its actions allows every action
asked for that scope. A 4xx grants nothing for this request (the service refused the
question: an unknown project, say) and is not cached; but 401, 407, 408 and 429, like a 5xx
or another status, a body not of that shape or a timeout, are an outage: 503, never a wider
grant. A resource class (`repository(plugin)`) is not sent: the registry ignores it (its
access set is keyed by type and name), so a class must never change what is granted. Scopes
on one type and name, with or without a class, are asked about once, with all their actions,
and the answer holds for each of them. Nothing granted by the ACL: nothing to ask.

Answers may be reused for `cache_ttl` seconds for the same question (account, groups,
service, client address and scopes with their actions), at most `cache_size` per worker.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from cachetools import TTLCache
from pydantic import SecretStr

from app.authz.base import Requester
from app.backend_settings import AuthzWebhookSettings
from app.errors import AuthorizationUnavailableError
from app.http_hook import HookClient, HookDown
from app.protocol.scopes import Scope

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# (type, name) -> the actions the service allows there
Allowed = dict[tuple[str, str], frozenset[str]]
REFUSED: Allowed = {}  # a 4xx answer: nothing allowed, and not kept in the cache
# 4xx answers about the service, not about the question: outages.
NOT_REFUSALS = frozenset({401, 407, 408, 429})
Asked = tuple[tuple[str, str, tuple[str, ...]], ...]  # type, name, actions
Question = tuple[str | None, frozenset[str], str, str | None, Asked]


class AuthzWebhook:
    def __init__(
        self,
        config: AuthzWebhookSettings,
        *,
        secret: SecretStr | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        self._hook = HookClient(
            config, key="authz_webhook", secret=secret, client=client, clock=clock
        )
        self.breaker = self._hook.breaker
        self._answers: TTLCache[Question, Allowed] | None = (
            TTLCache(config.cache_size, config.cache_ttl, timer=clock)
            if config.cache_ttl > 0
            else None
        )

    async def aclose(self) -> None:
        await self._hook.aclose()

    async def restrict(self, requester: Requester, granted: Sequence[Scope]) -> list[Scope]:
        """`granted` (the ACL's), each scope keeping only the actions the service allows too.
        AuthorizationUnavailableError (503) when it gives no answer."""
        asked = _resources(granted)
        if not asked:
            return list(granted)
        where = str(requester.ip) if requester.ip is not None else None
        question: Question = (requester.account, requester.groups, requester.service, where, asked)
        allowed = self._answers.get(question) if self._answers is not None else None
        if allowed is None:
            allowed = await self._ask(requester, where, asked)
            if self._answers is not None and allowed is not REFUSED:
                self._answers[question] = allowed
        return [_narrowed(scope, allowed) for scope in granted]

    async def _ask(self, requester: Requester, where: str | None, asked: Asked) -> Allowed:
        body = {
            "account": requester.account,
            "groups": sorted(requester.groups),
            "service": requester.service,
            "client_ip": where,
            "scopes": [{"type": k, "name": n, "actions": list(a)} for k, n, a in asked],
        }
        try:
            return await self._hook.post(body, functools.partial(_answer, self._config.name))
        except HookDown as exc:
            log.warning("authorization webhook %s gave no answer: %s", self._config.name, exc)
            raise AuthorizationUnavailableError(
                self._config.name, exc.problem, retry_after=exc.retry_after
            ) from None


def _resources(granted: Sequence[Scope]) -> Asked:
    """What to ask about: each type and name granted anything, with all the actions granted
    there (`repository:x` and `repository(plugin):x` are one resource to the registry). In
    order, so that one question asked as `pull,push` or `push,pull` (or its scopes in another
    order) is one answer in the cache, not two."""
    merged: dict[tuple[str, str], set[str]] = {}
    for scope in granted:
        if scope.actions:
            merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
    return tuple(
        (kind, name, tuple(sorted(actions))) for (kind, name), actions in sorted(merged.items())
    )


def _narrowed(scope: Scope, allowed: Allowed) -> Scope:
    if not scope.actions:
        return scope
    permitted = allowed.get((scope.type, scope.name), frozenset())
    if "*" in permitted:
        return scope
    return scope.with_actions(tuple(a for a in scope.actions if a in permitted))


def _answer(name: str, response: httpx.Response) -> Allowed | None:
    """The service's answer; None for anything that is not one (an outage). A 4xx is the
    service refusing this question (an unknown project, say): nothing allowed, not kept, and
    no outage (any client could otherwise open the circuit for everyone with requests it
    refuses); but 401, 407, 408 and 429 say the service is misconfigured or overloaded."""
    status = response.status_code
    if 400 <= status < 500 and status not in NOT_REFUSALS:
        log.warning("authorization webhook %s answered %d: nothing granted", name, status)
        return REFUSED
    if status != 200:
        return None
    try:
        data: Any = response.json()
    except (ValueError, RecursionError):  # nested past the parser's depth: not an answer
        return None
    scopes = data.get("scopes") if isinstance(data, dict) else None
    if not isinstance(scopes, list):
        return None
    allowed: Allowed = {}
    for entry in scopes:
        parsed = _entry(entry)
        if parsed is None:
            return None
        key, actions = parsed
        allowed[key] = allowed.get(key, frozenset()) | actions
    return allowed


def _entry(entry: Any) -> tuple[tuple[str, str], frozenset[str]] | None:
    """One {"type", "name", "actions"} of the answer (other keys ignored); None when it is not
    that."""
    if not isinstance(entry, dict):
        return None
    kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
    if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(actions, list):
        return None
    if not all(isinstance(action, str) for action in actions):
        return None
    return (kind, name), frozenset(actions)
