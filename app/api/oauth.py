"""The OAuth2 POST flow on the token endpoint (protocol.md §2): form in, grant out.

Errors here answer in RFC 6749 §5.2 form (`error`, `error_description`), not in the GET
endpoint's form: these clients parse the OAuth2 shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import JSONResponse

from app.errors import ClientError, InvalidRequestError
from app.protocol.oauth import PasswordGrant, oauth_response, parse_grant
from app.service import IPAddress, TokenService

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 128
FORM_TYPE = "application/x-www-form-urlencoded"

Endpoint = Callable[[Request], Awaitable[JSONResponse]]


def oauth_endpoint(service: TokenService) -> Endpoint:
    async def token_post(request: Request) -> JSONResponse:
        try:
            grant = parse_grant(await read_form(request))
            client = _client_ip(request)
            if isinstance(grant, PasswordGrant):
                issued = await service.grant_password(grant, client)
            else:
                issued = await service.grant_refresh(grant, client)
        except ClientError as exc:
            return JSONResponse(exc.oauth_body(), status_code=exc.status)
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


def _client_ip(request: Request) -> IPAddress | None:
    if request.client is None:
        return None
    try:
        return ip_address(request.client.host)
    except ValueError:
        return None
