"""The application factory: `create_app(settings)` builds everything; nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from app import __version__
from app.api import worker_status
from app.api.audit import AuditLog
from app.api.config_refusal import config_refused
from app.api.lifespans import combine_lifespans, hand_back_lifespan, polling_lifespan
from app.api.limits import LimitsMiddleware, Receive, Scope, Send, request_id
from app.api.metrics_http import CONTENT_TYPE, LiveValues, render_metrics
from app.api.oauth import TokenPost, oauth_route
from app.api.observe import ObserveMiddleware
from app.api.openapi_docs import ERROR_RESPONSES, TOKEN_GET, TOKEN_POST
from app.api.publishing import build_publish_loop, etcd_status, publish_lifespan
from app.api.reloading import Lifespan, reload_lifespan
from app.api.responses import FastJSONResponse
from app.api.tls import ReloadingTLS
from app.api.token_get import TokenGet, TokenLayer, error_answer
from app.api.watchdog import heartbeat_lifespan
from app.api.worker_status import WorkerReadiness
from app.errors import BackendUnavailableError, ClientError, StateStoreError
from app.etcd.loop import PublishLoop
from app.etcd.state import state_outages
from app.keys.expiry import ExpiryState
from app.keys.jwks import KidFormat, jwks_document
from app.metrics import flush as flush_counts
from app.reload import Reloadable
from app.service import TokenService
from app.settings import Settings
from app.state.sqlite import SqliteStore, unwritable_because

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def create_app(
    settings: Settings,
    service: TokenService | None = None,
    *,
    on_hangup: Callable[[], None] | None = None,
) -> FastAPI:
    """The token server. Pass a service to inject test doubles (clock, keys, users);
    `on_hangup` runs (in a worker thread) after a SIGHUP has reloaded the watched files."""
    token_service = service or TokenService.from_settings(settings)
    publish_loop = build_publish_loop(settings)
    # In a granian worker granian serves the pair (app.api.tls): the app only checks the files.
    serves = not worker_status.shared()
    tls = ReloadingTLS(settings.tls, serves=serves) if settings.tls is not None else None
    audit = AuditLog(settings.audit_log, time.time)
    app = TokenServer(
        title="registry-auth",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # no docs, no schema: app.openapi() still builds it (the fuzz tests)
        # Starlette's 307 to the other spelling of a path named the client's Host, always as
        # http, and made clients send a password form again: the token paths answer both
        # spellings themselves (_token_spellings); anything else unknown is a 404.
        redirect_slashes=False,
        default_response_class=FastJSONResponse,
        **_without_telemetry(),
        lifespan=_lifespan(settings, token_service, publish_loop, tls, audit, on_hangup=on_hangup),
    )
    app.state.service = token_service
    app.state.audit = audit
    app.state.tls = tls
    _install_error_handlers(app)
    app.add_middleware(LimitsMiddleware, limits=settings.limits)
    app.add_middleware(ObserveMiddleware, token_paths=_token_spellings(settings))
    proxies = (settings.trusted_proxies, settings.client_ip_header)
    get_token = TokenGet(token_service, audit, *proxies)
    post_token = TokenPost(token_service, audit, *proxies)
    # A GET or POST token request never reaches FastAPI's layers, the two middlewares above or
    # the router.
    app.token_layer = TokenLayer(
        paths=_token_spellings(settings),
        get=get_token,
        post=post_token.answer,
        limits=settings.limits,
    )
    _add_token_routes(app, _token_paths(settings), get_token, post_token)
    _add_status_routes(app, token_service, publish_loop, metrics=settings.metrics)
    return app


def _lifespan(
    settings: Settings,
    service: TokenService,
    publish_loop: PublishLoop | None,
    tls: ReloadingTLS | None,
    audit: AuditLog,
    *,
    on_hangup: Callable[[], None] | None,
) -> Lifespan:
    return _closing(
        combine_lifespans(
            # First: it beats while the others start (an etcd publish may take seconds).
            heartbeat_lifespan(),
            reload_lifespan(service.reloadables, settings.reload_interval, on_hangup),
            hand_back_lifespan(service.throttle),
            publish_lifespan(publish_loop, settings),
            # Quick checks on the event loop: a renewed TLS certificate, a rotated audit log.
            polling_lifespan(
                settings.reload_interval,
                audit.reopen_if_moved,
                *([tls.reload_if_changed] if tls is not None else []),
                *([_readiness_for_others(service, audit, tls)] if worker_status.shared() else []),
            ),
        ),
        service,
        audit,
    )


def _readiness_for_others(
    service: TokenService, audit: AuditLog, tls: ReloadingTLS | None
) -> Callable[[], None]:
    def publish_readiness() -> None:
        worker_status.publish(own_readiness(service, audit, tls))

    return publish_readiness


def _add_token_routes(
    app: FastAPI, paths: list[str], get_token: TokenGet, post_token: TokenPost
) -> None:
    async def token(request: Request) -> Response:
        # HEAD, and the OpenAPI description of GET: GET itself is answered by TokenLayer.
        status, body, headers = await get_token.answer(request.scope, request_id(request.scope))
        response = Response(body, status, media_type="application/json")
        response.raw_headers.extend(headers)
        return response

    post = oauth_route(post_token)

    async def any_token_method(request: Request) -> Response:
        return await (post(request) if request.method == "POST" else token(request))

    for path in paths:
        # A plain route for HEAD (and GET and POST, should a request ever get past
        # TokenLayer), which also makes a 405's Allow list all three; Starlette takes the first
        # matching route, so the API routes below only describe GET and POST in the OpenAPI
        # schema (which the schemathesis fuzz tests drive).
        for spelling in _spellings(path):
            app.add_route(
                spelling, any_token_method, methods=["GET", "POST"], include_in_schema=False
            )
        app.add_api_route(
            path,
            token,
            methods=["GET"],
            summary="Issue a registry token",
            responses=ERROR_RESPONSES,
            openapi_extra=TOKEN_GET,
        )
        app.add_api_route(
            path,
            post,
            methods=["POST"],
            summary="OAuth2 token grants",
            responses=ERROR_RESPONSES,
            openapi_extra=TOKEN_POST,
        )


def _add_status_routes(
    app: FastAPI, token_service: TokenService, publish_loop: PublishLoop | None, *, metrics: bool
) -> None:
    @_get_and_head(app, "/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @_get_and_head(app, "/readyz", summary="Readiness")
    async def readyz() -> JSONResponse:
        return readiness(token_service, etcd_status(publish_loop), app.state.audit, app.state.tls)

    @_get_and_head(app, "/.well-known/jwks.json", summary="Published signing keys (JWKS)")
    async def jwks(kid_format: KidFormat = KidFormat.LIBTRUST) -> JSONResponse:
        certificates = [key.certificate for key in token_service.keyring.published]
        return JSONResponse(
            jwks_document(certificates, kid_format), headers={"Cache-Control": "max-age=60"}
        )

    if metrics:

        @_get_and_head(app, "/metrics", summary="Prometheus metrics", response_class=Response)
        async def prometheus() -> Response:
            return Response(render_metrics(lambda: _live_values(app, publish_loop)),
                            media_type=CONTENT_TYPE)  # fmt: skip


def _get_and_head(app: FastAPI, path: str, **options: Any) -> Callable[[Handler], Handler]:
    """A GET route that answers HEAD too (RFC 9110: wherever GET does; monitoring probes send
    it). FastAPI's routes take only the methods named; HEAD stays out of the OpenAPI schema.
    Starlette takes the first route matching the path, also for a 405's Allow: that one takes
    both (a route for HEAD alone made it `Allow: HEAD`); the GET route is the schema's."""

    def register(handler: Handler) -> Handler:
        app.api_route(path, methods=["GET", "HEAD"], include_in_schema=False, **options)(handler)
        return app.get(path, **options)(handler)

    return register


class TokenServer(FastAPI):
    """FastAPI, with GET and POST on the token paths answered before any of FastAPI's own
    layers: every pull and push is one of these, and those layers cost more than a reused
    token (docs/performance.md). `token_layer` does for them what the middlewares and handlers
    do for the rest."""

    token_layer: TokenLayer | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        layer = self.token_layer
        try:
            if layer is not None and layer.handles(scope):
                await layer.serve(scope, receive, send)
                return
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs `shutdown_timeout` after SIGTERM, and would answer
            # 500 and log the cancellation as a traceback. Finish the task with an answer.
            if scope["type"] != "http":
                raise
            log.warning("%s %s cut: still running at shutdown", scope["method"], scope["path"])
            await _answer_shutting_down(send)


async def _answer_shutting_down(send: Send) -> None:
    """503 for a request cut at shutdown; nothing when its answer had already begun (the
    server then closes the connection) or the client is gone."""
    text = "the server is shutting down; try again"  # both error shapes (GET and OAuth2)
    body = orjson.dumps(
        {"details": text, "error": "temporarily_unavailable", "error_description": text}
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"connection", b"close"),
        (b"retry-after", b"1"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _without_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.13x asks OpenTelemetry's global providers on every request whether to trace
    it (~10 µs of a ~150 µs request); this service configures no OpenTelemetry: say so once.
    Older FastAPI versions have no such parameter and need nothing."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _live_values(app: FastAPI, publish_loop: PublishLoop | None) -> LiveValues:
    active = app.state.service.keyring.active
    tls: ReloadingTLS | None = app.state.tls
    return LiveValues(
        (active.kid, active.not_after.timestamp()),
        tls.not_after.timestamp() if tls is not None else None,
        etcd_status(publish_loop),
        (*_reload_states(app.state.service, tls), ("config", config_refused())),
        robots.next_expiry() if (robots := app.state.service.robot_expiry) is not None else None,
        robots.expired() if robots is not None else None,
    )


def readiness(
    token_service: TokenService,
    etcd: dict[str, Any],
    audit: AuditLog | None = None,
    tls: ReloadingTLS | None = None,
) -> JSONResponse:
    """Ready unless no token can be signed. An expiring certificate, a failed reload (the
    previous state still serves) and an audit log dropping lines are warnings; etcd being down
    is reported but does not make the service unready (tokens do not depend on it). With
    several workers, the answer covers every one (app.api.worker_status): their warnings, and
    one more when they do not all sign with the same key."""
    own = own_readiness(token_service, audit, tls)
    worker_status.publish(own)
    workers = worker_status.others(own.pid)
    status = token_service.certificate_status()
    body: dict[str, Any] = {
        "status": "ready",
        "active_kid": own.active_kid,
        "certificate": {
            "not_before": status.not_before.isoformat(),
            "not_after": status.not_after.isoformat(),
            "state": status.state.value,
        },
        "etcd": etcd,
    }
    warnings = list(own.warnings)
    for worker in workers:
        warnings += [warning for warning in worker.warnings if warning not in warnings]
    kids = sorted({own.active_kid, *(worker.active_kid for worker in workers)})
    if len(kids) > 1:
        warnings.append(
            f"the workers do not sign with the same key ({', '.join(kids)}): one has not "
            "loaded the key ring yet, or could not (see the log)"
        )
    if worker_status.shared():
        body["workers"] = 1 + len(workers)
    if warnings:
        body["warnings"] = warnings
    if not (own.ready and all(worker.ready for worker in workers)):
        body["status"] = "unavailable"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


def own_readiness(
    token_service: TokenService, audit: AuditLog | None, tls: ReloadingTLS | None = None
) -> WorkerReadiness:
    """This process's part of /readyz."""
    status = token_service.certificate_status()
    warnings = [] if status.state is ExpiryState.OK else [status.message]
    # Which kind of file, not which path nor why: the log has both (anyone may ask /readyz).
    warnings += [
        f"the last reload of the {kind} failed: the previous one still serves (see the log)"
        for kind, failed in _reload_states(token_service, tls)
        if failed
    ]
    robots = token_service.robot_expiry.warning() if token_service.robot_expiry else None
    if robots is not None:
        warnings.append(robots)
    if config_refused():
        warnings.append(
            "the config file is not the one in force: the last SIGHUP could not apply it "
            "(see the log); a restart would fail or change the service"
        )
    for _where, down_for in state_outages():  # not where: the log has it
        warnings.append(
            f"the state store (etcd) failed {down_for:.0f} s ago and has not answered since (the "
            "next login or refresh grant asks it again): refresh grants get 503, no refresh "
            "token is issued, failed logins are counted per process (see the log)"
        )
    if _state_file_unusable(token_service):
        warnings.append(
            "the state file cannot be used: refresh grants get 503, no refresh token is issued, "
            "failed logins are counted per process (`registry-auth serve` would refuse it)"
        )
    if audit is not None and audit.dropping:
        warnings.append("the audit log is dropping lines: it cannot be written (see the log)")
    return WorkerReadiness(os.getpid(), token_service.can_sign(), status.kid, tuple(warnings))


def _reload_states(token_service: TokenService, tls: ReloadingTLS | None) -> list[tuple[str, bool]]:
    """Each watched kind of file, and whether its last reload failed."""
    watched: list[ReloadingTLS | Reloadable[Any]] = [*token_service.reloadables]
    watched += [tls] if tls is not None else []
    return [(item.kind, item.last_error is not None) for item in watched]


def _state_file_unusable(token_service: TokenService) -> bool:
    """Whether the SQLite state file is one the start would refuse (replaced by another file,
    its directory gone or read-only): the store fails open, and said so only in the log."""
    tokens = token_service.refresh_tokens
    store = tokens.store if tokens is not None else None
    return isinstance(store, SqliteStore) and unwritable_because(store.path) is not None


def _closing(lifespan: Lifespan, service: TokenService, audit: AuditLog) -> Lifespan:
    """The given lifespan, then the service's backend connections closed and the last counts
    written at shutdown."""

    @contextlib.asynccontextmanager
    async def closing(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            await service.aclose()
            audit.close()
            flush_counts()

    return closing


def _token_paths(settings: Settings) -> list[str]:
    paths = ["/token"]
    realm_path = settings.realm_path
    if realm_path not in paths:
        paths.append(realm_path)
    return paths


def _token_spellings(settings: Settings) -> list[str]:
    """The token paths with and without a trailing slash: clients and proxies add or drop
    one, and the answer must not be a redirect (see create_app)."""
    spellings = (spelling for path in _token_paths(settings) for spelling in _spellings(path))
    return list(dict.fromkeys(spellings))


def _spellings(path: str) -> tuple[str, ...]:
    if path == "/":
        return (path,)
    return (path, path[:-1]) if path.endswith("/") else (path, path + "/")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClientError)
    @app.exception_handler(BackendUnavailableError)
    @app.exception_handler(StateStoreError)
    async def known_error(_: Request, exc: Exception) -> JSONResponse:
        status, body, headers = error_answer(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        parameter = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        body = {
            "details": f"invalid request: {first.get('msg', 'malformed')}",
            "error": "invalid_request",
        }
        if parameter:
            body["parameter"] = parameter
        return JSONResponse(body, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        body = {
            "details": str(exc.detail),
            "error": "not_found" if exc.status_code == 404 else "http",
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        status, body, headers = error_answer(exc)
        return JSONResponse(body, status_code=status, headers=headers)
