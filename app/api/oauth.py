"""The OAuth2 POST flow on the token endpoint (protocol.md §2): form in, grant out.

Errors here answer in RFC 6749 §5.2 form (`error`, `error_description`), not in the GET
endpoint's form: these clients parse the OAuth2 shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs

import orjson
from fastapi import Request
from fastapi.responses import Response

from app.api.audit import AuditLog, Decision
from app.api.client_ip import Network, client_ip
from app.api.limits import Scope, request_id
from app.api.token_get import Answer, encode_headers, error_answer, wanted_headers
from app.errors import ClientError, InvalidRequestError
from app.protocol.oauth import Form, PasswordGrant, RefreshGrant, oauth_response, parse_grant
from app.protocol.tokens import stated
from app.service import TokenService, address_text
from app.setting_types import ClientIPHeader

MAX_FORM_FIELDS = 128
FORM_TYPE = "application/x-www-form-urlencoded"
_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


class TokenPost:
    """Answers one POST token request from its ASGI scope and its whole body (read within
    `limits.max_body_bytes` by whoever calls: the token layer, or LimitsMiddleware)."""

    def __init__(
        self,
        service: TokenService,
        audit: AuditLog | None,
        trusted_proxies: Sequence[Network],
        client_ip_header: ClientIPHeader = "x-forwarded-for",
    ) -> None:
        self._service = service
        self._audit = audit
        self._trusted = trusted_proxies
        self._header: ClientIPHeader = client_ip_header

    async def answer(self, scope: Scope, rid: str, body: bytes) -> Answer:
        _, forwarded, real_ip = wanted_headers(scope["headers"])
        peer = scope.get("client")
        client = client_ip(
            peer[0] if peer else None, forwarded, real_ip, self._trusted, self._header
        )
        decision = Decision(rid, address_text(client), "post")
        form: Form | None = None
        grant: PasswordGrant | RefreshGrant | None = None
        try:
            form = parse_form(body, _content_type(scope["headers"]))
            grant = parse_grant(form)
            decision.grant = "password" if isinstance(grant, PasswordGrant) else "refresh_token"
            decision.ask(grant.scopes, grant.service, grant.client_id)
            if isinstance(grant, PasswordGrant):
                decision.account = grant.username
                issued = await self._service.grant_password(grant, client)
            else:
                issued = await self._service.grant_refresh(grant, client)
            decision.issued(issued)
        except ClientError as exc:  # in RFC 6749's form: these clients parse the OAuth2 shape
            decision.refused(exc)
            if grant is None and form is not None:  # refused before the grant was understood
                decision.service, decision.client_id = stated(form)
            return exc.status, orjson.dumps(exc.oauth_body()), encode_headers(exc.headers())
        except Exception as exc:  # noqa: BLE001 - every error becomes a JSON answer
            decision.refused(exc)
            status, error, headers = error_answer(exc)
            error.setdefault("error_description", error["details"])  # RFC 6749 §5.2's field
            return status, orjson.dumps(error), encode_headers(headers)
        except asyncio.CancelledError:
            decision.cut()
            raise
        finally:
            if self._audit is not None:
                self._audit.write(decision)
        answer = oauth_response(
            issued.token,
            issued_at=issued.issued_at,
            ttl=issued.expires_in,
            granted=issued.granted,
            refresh_token=issued.refresh_token,
        )
        return 200, orjson.dumps(answer), list(_NO_STORE)


def oauth_route(post: TokenPost) -> Callable[[Request], Awaitable[Response]]:
    """The same answer as a FastAPI route (the token layer answers POST before FastAPI; this
    route describes it in the OpenAPI schema and serves it should a request get past)."""

    async def token_post(request: Request) -> Response:
        status, body, headers = await post.answer(
            request.scope, request_id(request.scope), await request.body()
        )
        response = Response(body, status, media_type="application/json")
        response.raw_headers.extend(headers)
        return response

    return token_post


def parse_form(body: bytes, content_type: str) -> dict[str, list[str]]:
    """The url-encoded body, each name mapped to all its values; 400 naming the problem.

    An empty body is an empty form whatever its type: the answer then names the missing field.
    Its size was bounded as it was read (`limits.max_body_bytes`: 413 beyond).
    """
    media_type = content_type.partition(";")[0].strip().lower()
    if body and media_type != FORM_TYPE:
        raise InvalidRequestError(
            f"the POST body must be {FORM_TYPE}, not {media_type or 'absent'!r}",
            parameter="Content-Type",
        )
    try:
        return parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",  # `%ff` is not UTF-8 either: no U+FFFD in a password
        )
    except UnicodeDecodeError:
        raise InvalidRequestError("the POST body is not UTF-8") from None
    except ValueError:
        raise InvalidRequestError(f"the POST body has more than {MAX_FORM_FIELDS} fields") from None


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"content-type":
            return value.decode("latin-1")
    return ""
