"""Counting requests and their latency by endpoint and outcome (a plain ASGI middleware)."""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from typing import Any

from app.api.limits import ASGIApp, Message, Receive, Scope, Send
from app.metrics import count, metrics
from app.metrics import observe as observe_latency

_FIXED = {
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
    "/.well-known/jwks.json": "jwks",
}


def outcome(status: int) -> str:
    if status < 400:
        return "success"
    if status == 401:
        return "unauthorized"
    if status == 429:
        return "throttled"
    if status < 500:
        return "invalid"
    return "unavailable" if status == 503 else "error"


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, token_paths: Collection[str]) -> None:
        self.app = app
        self.token_paths = frozenset(token_paths)

    def endpoint(self, scope: Scope) -> str:
        path = scope.get("path", "")
        if path in self.token_paths:
            return "token_post" if scope.get("method") == "POST" else "token"
        return _FIXED.get(path, "other")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            observe(self.endpoint(scope), status, started)


def observe(endpoint: str, status: int, started: float) -> None:
    """Count one answered request and its latency (`started`: its time.perf_counter())."""
    requests, latency = _series(endpoint, outcome(status))
    count(requests)
    observe_latency(latency, time.perf_counter() - started)


@functools.cache  # a handful of label sets; labels() takes a lock and builds a key each time
def _series(endpoint: str, result: str) -> tuple[Any, Any]:
    counters = metrics()
    return counters.requests.labels(endpoint, result), counters.latency.labels(endpoint)
