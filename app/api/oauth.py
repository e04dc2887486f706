"""The OAuth2 POST flow on the token endpoint (protocol.md §2): form in, grant out.

Errors here answer in RFC 6749 §5.2 form (`error`, `error_description`), not in the GET
endpoint's form: these clients parse the OAuth2 shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import JSONResponse

from app.api.audit import AuditLog, Decision
from app.api.client_ip import request_client_ip
from app.api.limits import request_id
from app.errors import ClientError, InvalidRequestError
from app.protocol.oauth import PasswordGrant, oauth_response, parse_grant
from app.service import TokenService

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 128
FORM_TYPE = "application/x-www-form-urlencoded"

Endpoint = Callable[[Request], Awaitable[JSONResponse]]


def oauth_endpoint(service: TokenService, audit: AuditLog | None = None) -> Endpoint:
    trusted = service.settings.trusted_proxies

    async def token_post(request: Request) -> JSONResponse:
        client = request_client_ip(request, trusted)
        decision = Decision(request_id(request.scope), str(client) if client else None, "post")
        try:
            grant = parse_grant(await read_form(request))
            decision.grant = "password" if isinstance(grant, PasswordGrant) else "refresh_token"
            decision.ask(grant.scopes, grant.service, grant.client_id)
            if isinstance(grant, PasswordGrant):
                decision.account = grant.username
                issued = await service.grant_password(grant, client)
            else:
                issued = await service.grant_refresh(grant, client)
            decision.issued(issued)
        except ClientError as exc:
            decision.refused(exc)
            return JSONResponse(exc.oauth_body(), status_code=exc.status, headers=exc.headers())
        except Exception as exc:
            decision.refused(exc)
            raise
        finally:
            if audit is not None:
                audit.write(decision)
        body = oauth_response(
            issued.token,
            issued_at=issued.issued_at,
            ttl=issued.expires_in,
            granted=issued.granted,
            refresh_token=issued.refresh_token,
        )
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    return token_post


async def read_form(request: Request) -> dict[str, list[str]]:
    """The url-encoded body, each name mapped to all its values; 400 naming the problem.

    An empty body is an empty form whatever its type: the answer then names the missing field.
    """
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequestError(f"the POST body exceeds {MAX_FORM_BYTES} bytes")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
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
        )
    except UnicodeDecodeError:
        raise InvalidRequestError("the POST body is not UTF-8") from None
    except ValueError:
        raise InvalidRequestError(f"the POST body has more than {MAX_FORM_FIELDS} fields") from None
