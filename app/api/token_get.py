"""GET and POST on the token paths, answered ahead of FastAPI (app.api.app.TokenServer).

Every pull and push of every client is one of these requests: a GET with Basic credentials, or
a POST (docker once logged in, with its refresh token; containerd with the password; protocol.md
§2). FastAPI's routing, its request and response objects and the chain of middlewares wrapped
around each `send` cost as much CPU as answering with a reused token (docs/performance.md). So
this layer answers them whole, with the same parts the other routes go through: the input limits
and request id of LimitsMiddleware, the counters of ObserveMiddleware, the error answers of the
app's exception handlers and the audit log. Everything else (HEAD, other paths) goes on to
FastAPI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

import orjson

from app.api.audit import AuditLog, Decision
from app.api.client_ip import Network, client_ip
from app.api.credentials import request_credentials
from app.api.limits import (
    REFUSAL_HEADERS,
    REQUEST_ID_HEADER,
    LimitExceededError,
    Receive,
    Scope,
    Send,
    check_head,
    new_request_id,
    read_body,
)
from app.api.observe import observe
from app.errors import BackendUnavailableError, ClientError, StateStoreError
from app.log_limit import LogEvery
from app.protocol.tokens import TokenRequest, parse_token_query, stated_in_query, token_response
from app.service import TokenService, address_text
from app.setting_types import ClientIPHeader
from app.settings_sections import LimitSettings

log = logging.getLogger(__name__)
_outage_log = LogEvery(log)  # while the store is down: once a minute, with a count

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes, Headers]
_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")


def error_answer(exc: Exception) -> tuple[int, dict[str, object], dict[str, str]]:
    """Status, JSON body and headers for an error raised while answering; never a traceback."""
    if isinstance(exc, ClientError | BackendUnavailableError):
        return exc.status, exc.body(), exc.headers()
    if isinstance(exc, StateStoreError):
        # The operator needs the cause; the client only that it is not its fault.
        _outage_log.log(logging.ERROR, "store", "refresh-token store unavailable: %s", exc)
        body: dict[str, object] = {
            "details": "refresh-token store unavailable",
            "error": "temporarily_unavailable",
        }
        return 503, body, {"Retry-After": "5"}
    log.error("internal error while serving a request: %s", type(exc).__name__)
    return 500, {"details": "internal server error", "error": "internal"}, {}


class TokenGet:
    """Answers one GET token request from its ASGI scope."""

    def __init__(
        self,
        service: TokenService,
        audit: AuditLog,
        trusted_proxies: Sequence[Network],
        client_ip_header: ClientIPHeader = "x-forwarded-for",
    ) -> None:
        self._service = service
        self._audit = audit
        self._trusted = trusted_proxies
        self._header: ClientIPHeader = client_ip_header

    async def answer(self, scope: Scope, rid: str) -> Answer:
        authorization, forwarded, real_ip = wanted_headers(scope["headers"])
        peer = scope.get("client")
        client = client_ip(
            peer[0] if peer else None, forwarded, real_ip, self._trusted, self._header
        )
        decision = Decision(rid, address_text(client), "get")
        query = scope.get("query_string", b"").decode("latin-1")
        token_request: TokenRequest | None = None
        try:
            credentials = request_credentials(authorization)
            decision.account = credentials.account if credentials is not None else None
            token_request = parse_token_query(query)
            if token_request.offline_token and scope["method"] == "HEAD":
                # The answer has no body: a refresh token made for it would reach nobody, yet
                # count against the account's cap and could push out a real login's.
                token_request = dataclasses.replace(token_request, offline_token=False)
            decision.ask(token_request.scopes, token_request.service, token_request.client_id)
            issued = await self._service.issue(token_request, credentials, client)
            decision.issued(issued)
        except Exception as exc:  # noqa: BLE001 - every error becomes a JSON answer
            decision.refused(exc)
            if token_request is None:  # refused before the query was understood
                decision.service, decision.client_id = stated_in_query(query)
            status, body, headers = error_answer(exc)
            return status, orjson.dumps(body), encode_headers(headers)
        except asyncio.CancelledError:
            decision.cut()
            raise
        finally:
            self._audit.write(decision)
        answer = token_response(issued.token, issued_at=issued.issued_at, ttl=issued.expires_in)
        if issued.refresh_token is not None:
            answer["refresh_token"] = issued.refresh_token
        return 200, orjson.dumps(answer), [_NO_STORE]


# The POST endpoint (app.api.oauth.TokenPost): scope, request id and the whole body.
PostEndpoint = Callable[[Scope, str, bytes], Awaitable[Answer]]


class TokenLayer:
    """GET and POST on `paths`, answered by `TokenGet` and the POST endpoint with the limits,
    request id and counters around them; the app calls `serve` for every request `handles`
    says yes to."""

    def __init__(
        self,
        *,
        paths: Collection[str],
        get: TokenGet,
        post: PostEndpoint,
        limits: LimitSettings,
    ) -> None:
        self._paths = frozenset(paths)
        self._get = get
        self._post = post
        self._limits = limits

    def handles(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] in ("GET", "POST")
            and scope["path"] in self._paths
        )

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the counters say if sending fails
        rid = new_request_id(scope["headers"])
        try:
            try:
                check_head(scope, self._limits)
                if scope["method"] == "GET":  # no body to read
                    status, body, headers = await self._get.answer(scope, rid)
                else:
                    form = await read_body(scope, receive, self._limits)
                    status, body, headers = await self._post(scope, rid, form)
            except LimitExceededError as exc:  # the answers themselves never raise
                oauth = scope["method"] == "POST"
                status, body, headers = exc.status, exc.body(oauth), list(REFUSAL_HEADERS)
            headers += [
                _JSON,
                (b"content-length", str(len(body)).encode("ascii")),
                (REQUEST_ID_HEADER, rid.encode("ascii")),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            observe("token" if scope["method"] == "GET" else "token_post", status, started)


def wanted_headers(headers: Headers) -> tuple[list[str], list[str], str | None]:
    """Every Authorization and X-Forwarded-For, and X-Real-IP, decoded as HTTP headers are."""
    authorization: list[str] = []
    forwarded: list[str] = []
    real_ip = None
    for name, value in headers:
        if name == b"authorization":
            authorization.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-real-ip" and real_ip is None:
            real_ip = value.decode("latin-1")
    return authorization, forwarded, real_ip


def encode_headers(headers: dict[str, str]) -> Headers:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
