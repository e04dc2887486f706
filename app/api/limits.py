"""Input limits, checked by a plain ASGI middleware before any route runs.

Header block, Authorization header and query string are measured as they arrived; a body is
read here, at most `max_body_bytes` of it, and handed on whole, so no handler ever reads an
unbounded body. Every refusal is JSON naming the limit: 431 for headers, 400 for the query
string, 413 for the body (400 for one that ended early). The middleware also gives every
request an id (the client's X-Request-ID when it is a short safe token, else a fresh one),
echoed in the response and written to the audit log.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.settings_sections import LimitSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
# A refused request may have a body on its way that nobody will read: end the connection.
REFUSAL_HEADERS = ((b"connection", b"close"),)
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


_CODES = {408: "request_timeout", 413: "request_too_large", 431: "headers_too_large"}
# RFC 9112 §3.2: a 400 for an HTTP/1.1 request without exactly one Host. granian hands the app
# a missing one as an empty value (an `http` URI's host may not be empty either: RFC 9110
# §4.2.1); uvicorn's parser refuses a missing or second one itself (slow_clients.py).
HOST_REFUSAL = "an HTTP/1.1 request needs exactly one Host header, with a host in it"
# RFC 9112 §6.1: a request with both may be an attempt at request smuggling (a proxy in front
# framing it by the one, this server by the other); it is refused, and its connection closed
# (REFUSAL_HEADERS). granian closes such a connection itself; uvicorn kept it open.
_TWO_FRAMINGS = "a request may not have both Transfer-Encoding and Content-Length"


class LimitExceededError(Exception):
    def __init__(self, status: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter

    def body(self, oauth: bool = False) -> bytes:
        """The error in the shape of every other one: docker's `details`, and for a POST (an
        OAuth2 grant) also `error_description`, the same text."""
        code = _CODES.get(self.status, "invalid_request")
        body: dict[str, str] = {"details": self.message, "error": code}
        if oauth:
            body["error_description"] = self.message
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return json.dumps(body).encode("utf-8")


class BodyEndedEarlyError(LimitExceededError):
    """The body stopped before its end: nothing to judge (a truncated form is not the request
    it meant). The server says only `http.disconnect`, for a client that closed the connection,
    or its sending side only, and (granian) for a malformed chunk; the 400 reaches the latter
    two, and a server drops it for a client gone for good. Answering is what keeps granian
    from filling in a 500 of its own."""

    def __init__(self) -> None:
        super().__init__(400, "the request body ended early or is malformed")


def request_id(scope: Scope) -> str:
    """The id LimitsMiddleware gave this request ("-" outside it)."""
    return str(scope.get("state", {}).get("request_id", "-"))


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, limits: LimitSettings) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid
        send = _with_request_id(send, rid)
        try:
            check_head(scope, self.limits)
            body = await read_body(scope, receive, self.limits)
        except LimitExceededError as exc:
            await _refuse(send, exc, oauth=scope["method"] == "POST")
            return
        await self.app(scope, _replay(body, receive), send)


async def read_body(scope: Scope, receive: Receive, limits: LimitSettings) -> bytes:
    """The whole body, at most `max_body_bytes` of it (413 beyond), within
    `limits.header_timeout` of the headers (408 after); none for GET and HEAD.
    BodyEndedEarlyError (400) when the server says the client is gone before the body's end.

    The timeout is here, in the app, because granian bounds only the time to send the headers:
    a client announcing a body and dripping it (or sending none) held its connection for good.
    """
    if scope["method"] in ("GET", "HEAD"):
        return b""
    try:
        async with asyncio.timeout(limits.header_timeout):
            return await _read_all(receive, limits.max_body_bytes)
    except TimeoutError:
        raise LimitExceededError(
            408, f"the request body was not sent within {limits.header_timeout:g} s"
        ) from None


async def _read_all(receive: Receive, limit: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BodyEndedEarlyError
        body.extend(message.get("body", b""))
        if len(body) > limit:
            raise LimitExceededError(413, f"request body exceeds {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


def check_head(scope: Scope, limits: LimitSettings) -> None:
    """The limits on what arrives before the body (and the body's announced length)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    if sum(len(name) + len(value) + 4 for name, value in headers) > limits.max_header_bytes:
        raise LimitExceededError(
            431, f"request headers exceed {limits.max_header_bytes} bytes in total"
        )
    hosts = 0
    framings = 0  # Content-Length: 1, Transfer-Encoding: 2
    for name, value in headers:
        if name == b"host":
            hosts += 1 if value.strip() else 2  # an empty one is as bad as a second
        elif name == b"authorization" and len(value) > limits.max_authorization_length:
            raise LimitExceededError(
                431,
                f"Authorization header longer than {limits.max_authorization_length} bytes",
                "Authorization",
            )
        elif name == b"content-length":
            framings |= 1
            digits = value.strip()
            # Past 4,300 digits int() raises (CPython's limit): a 500 from the app, were a
            # server ever to pass such a length on (h11 and granian refuse it today).
            if digits.isdigit() and (len(digits) > 18 or int(digits) > limits.max_body_bytes):
                raise LimitExceededError(413, f"request body exceeds {limits.max_body_bytes} bytes")
        elif name == b"transfer-encoding":
            framings |= 2
    if hosts != 1 and scope.get("http_version") == "1.1":  # HTTP/1.0 may leave it out
        raise LimitExceededError(400, HOST_REFUSAL, "Host")
    if framings == 3:
        raise LimitExceededError(400, _TWO_FRAMINGS, "Transfer-Encoding")
    if len(scope.get("query_string", b"")) > limits.max_query_length:
        raise LimitExceededError(
            400, f"query string longer than {limits.max_query_length} bytes", "query"
        )


def new_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is a short safe token, else a fresh one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _SAFE_REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return os.urandom(16).hex()  # what uuid4().hex would carry, in a tenth of the time


def _with_request_id(send: Send, rid: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((REQUEST_ID_HEADER, rid.encode("ascii")))
            message["headers"] = headers
        await send(message)

    return sending


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read up front, once; then the real channel (disconnect notices)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, exc: LimitExceededError, *, oauth: bool) -> None:
    body = exc.body(oauth)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        *REFUSAL_HEADERS,
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
