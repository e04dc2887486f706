"""OpenAPI descriptions of the token endpoint, whose route reads its parameters by hand.

The GET reads query parameters itself (a `scope` may repeat and one value may hold several
scopes) and the POST reads its form itself (bounded); FastAPI cannot see either, so they are
declared here, for clients, for the docs and for the schema-driven fuzz test.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "properties": {
        "details": {"type": "string"},
        "error": {"type": "string"},
        "parameter": {"type": "string"},
        "error_description": {"type": "string"},
    },
    "required": ["error"],
}
_TOKEN = {
    "type": "object",
    "properties": {
        "token": {"type": "string"},
        "access_token": {"type": "string"},
        "expires_in": {"type": "integer"},
        "issued_at": {"type": "string"},
        "refresh_token": {"type": "string"},
        "scope": {"type": "string"},
    },
    "required": ["access_token", "expires_in", "issued_at"],
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, *, array: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if array:
        schema = {"type": "array", "items": schema}
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _json(_ERROR, "Malformed request: the body names the parameter"),
    401: _json(_ERROR, "Wrong credentials or a dead refresh token"),
    413: _json(_ERROR, "Request body too large"),
    429: _json(_ERROR, "Too many failed logins from this address (see Retry-After)"),
    431: _json(_ERROR, "Request headers too large"),
    503: _json(_ERROR, "A backend or the state store is unavailable; retry later"),
}

TOKEN_GET: dict[str, Any] = {
    "parameters": [
        _query("service", "the registry's service name"),
        _query("scope", "type:name:actions; repeatable, space-separated", array=True),
        _query("account", "the user name (informational)"),
        _query("client_id", "the client's name"),
        {
            **_query("offline_token", "true: also return a refresh token"),
            "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
        },
    ],
    "responses": {"200": _json(_TOKEN, "A token")},
}

_FORM_FIELDS = (
    "grant_type",
    "username",
    "password",
    "refresh_token",
    "service",
    "client_id",
    "access_type",
    "scope",
)

TOKEN_POST: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {name: {"type": "string"} for name in _FORM_FIELDS},
                }
            }
        },
    },
    "responses": {"200": _json(_TOKEN, "A token")},
}
