"""The OAuth2 POST flow of the token endpoint (distribution's oauth.md; protocol.md §2). Pure.

`scope` may come space-separated in one field (docker) or as repeated fields
(containers/image): parse_scopes takes both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from app.errors import InvalidRequestError, UnsupportedGrantTypeError
from app.protocol.scopes import Scope, parse_scopes
from app.protocol.tokens import rfc3339

MAX_FIELD_LENGTH = 512
# A password may be a CI job's ID token (the jwt backend): 1-2 KB. The same bound as the
# Authorization header's default (limits.max_authorization_length).
MAX_SECRET_LENGTH = 4096
Form = Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class PasswordGrant:
    service: str
    client_id: str
    username: str
    password: SecretStr
    scopes: list[Scope] = field(default_factory=list)
    offline: bool = False


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    service: str
    client_id: str
    refresh_token: SecretStr
    scopes: list[Scope] = field(default_factory=list)


def parse_grant(form: Form) -> PasswordGrant | RefreshGrant:
    """A form-encoded POST body (each name mapped to all its values) -> one grant."""
    grant_type = _required(form, "grant_type")
    if grant_type not in ("password", "refresh_token"):
        raise UnsupportedGrantTypeError(grant_type)
    # Optional, as on a GET: containers/image sends it only when the registry's challenge
    # named one (docker and containerd then send it empty). "" = the default service.
    service = _optional(form, "service") or ""
    client_id = _required(form, "client_id")
    scopes = parse_scopes(form.get("scope", ()))
    if grant_type == "refresh_token":
        token = SecretStr(_required(form, "refresh_token", secret=True))
        return RefreshGrant(service, client_id, token, scopes)
    access_type = _optional(form, "access_type") or "online"
    if access_type not in ("online", "offline"):
        raise InvalidRequestError("access_type must be online or offline", parameter="access_type")
    return PasswordGrant(
        service,
        client_id,
        _required(form, "username"),
        SecretStr(_required(form, "password", secret=True)),
        scopes,
        offline=access_type == "offline",
    )


def _required(form: Form, name: str, *, secret: bool = False) -> str:
    value = _optional(form, name, secret=secret)
    if not value:
        raise InvalidRequestError(f"missing field {name}", parameter=name)
    return value


def _optional(form: Form, name: str, *, secret: bool = False) -> str | None:
    values = form.get(name, ())
    if len(values) > 1:
        raise InvalidRequestError(f"field {name} given more than once", parameter=name)
    if not values:
        return None
    value = values[0]
    longest = MAX_SECRET_LENGTH if secret else MAX_FIELD_LENGTH
    if len(value) > longest:
        raise InvalidRequestError(f"field {name} longer than {longest} characters", parameter=name)
    # A password may hold any printable text; NUL and line breaks are never legitimate.
    if (not secret and not value.isprintable()) or any(c in value for c in "\x00\r\n"):
        raise InvalidRequestError(
            f"field {name} holds a control or invisible character", parameter=name
        )
    return value


def granted_scope(scopes: Sequence[Scope]) -> str:
    """The response's `scope`: what was granted, space-separated; nothing-granted entries out."""
    return " ".join(str(scope) for scope in scopes if scope.actions)


def oauth_response(
    token: str,
    *,
    issued_at: int,
    ttl: int,
    granted: Sequence[Scope],
    refresh_token: str | None,
) -> dict[str, Any]:
    """The 200 body of a POST grant (RFC 6749 §5.1 plus the registry's `issued_at`)."""
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "scope": granted_scope(granted),
        "expires_in": ttl,
        "issued_at": rfc3339(issued_at),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body
