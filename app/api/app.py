"""The application factory: `create_app(settings)` builds everything; nothing happens at import."""

from __future__ import annotations

import logging
from ipaddress import ip_address
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app import __version__
from app.api.credentials import parse_basic
from app.api.lifespans import combine_lifespans
from app.api.oauth import oauth_endpoint
from app.api.publishing import build_publish_loop, etcd_status, publish_lifespan
from app.api.reloading import reload_lifespan
from app.errors import ClientError, StateStoreError
from app.protocol.tokens import parse_token_request, token_response
from app.service import IPAddress, TokenService
from app.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, service: TokenService | None = None) -> FastAPI:
    """The token server. Pass a service to inject test doubles (clock, keys, users)."""
    token_service = service or TokenService.from_settings(settings)
    publish_loop = build_publish_loop(settings)
    app = FastAPI(
        title="registry-auth",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=combine_lifespans(
            reload_lifespan(token_service.reloadables, settings.reload_interval),
            publish_lifespan(publish_loop, settings),
        ),
    )
    app.state.service = token_service
    _install_error_handlers(app)

    async def token(request: Request) -> JSONResponse:
        params = {key: request.query_params.getlist(key) for key in request.query_params}
        token_request = parse_token_request(params)
        credentials = parse_basic(request.headers.get("authorization"))
        issued = await token_service.issue(token_request, credentials, _client_ip(request))
        body = token_response(issued.token, issued_at=issued.issued_at, ttl=issued.expires_in)
        if issued.refresh_token is not None:
            body["refresh_token"] = issued.refresh_token
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    for path in _token_paths(settings):
        app.add_api_route(path, token, methods=["GET"], summary="Issue a registry token")
        app.add_api_route(
            path, oauth_endpoint(token_service), methods=["POST"], summary="OAuth2 token grants"
        )

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness")
    async def readyz() -> dict[str, Any]:
        return {
            "status": "ready",
            "active_kid": token_service.keyring.active.kid,
            "etcd": etcd_status(publish_loop),
        }

    return app


def _token_paths(settings: Settings) -> list[str]:
    paths = ["/token"]
    realm_path = settings.realm_path
    if realm_path not in paths:
        paths.append(realm_path)
    return paths


def _client_ip(request: Request) -> IPAddress | None:
    if request.client is None:
        return None
    try:
        return ip_address(request.client.host)
    except ValueError:
        return None


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClientError)
    async def client_error(_: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(StateStoreError)
    async def state_store_error(_: Request, exc: StateStoreError) -> JSONResponse:
        # The operator needs the cause; the client only that it is not its fault.
        log.error("refresh-token store unavailable: %s", exc)
        body = {"details": "refresh-token store unavailable", "error": "temporarily_unavailable"}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

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
        log.error("internal error while serving a request: %s", type(exc).__name__)
        return JSONResponse(
            {"details": "internal server error", "error": "internal"}, status_code=500
        )
