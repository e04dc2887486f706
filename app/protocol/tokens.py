"""Token requests in, claims and token responses out (protocol.md §1 and §4). Pure functions."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from app.errors import InvalidRequestError
from app.protocol.scopes import Scope, parse_scopes

MAX_PARAM_LENGTH = 512
# `nbf` is set this far before `iat`: a registry allows 60 s of skew on it, so with this a
# registry whose clock is up to two minutes behind ours still takes a token at once (it would
# answer 401 `invalid_token` to every fresh one). `exp` and `expires_in` are not moved.
NOT_BEFORE_MARGIN = 60
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What a client asked the realm for (GET query parameters)."""

    service: str | None
    scopes: tuple[Scope, ...] = ()
    account: str | None = None
    client_id: str | None = None
    offline_token: bool = False


@functools.lru_cache(maxsize=1024)  # clients repeat the same few queries again and again
def parse_token_query(query: str) -> TokenRequest:
    """Parse a raw query string (already decoded from bytes as latin-1, as HTTP has it).

    The result is shared by every request with this query: it is immutable. A URL carries
    other characters percent-encoded (RFC 3986); uvicorn refuses raw ones, granian hands them
    on, where decoding them as latin-1 would turn UTF-8 `é` into `Ã©`.
    """
    if not query.isascii():
        raise InvalidRequestError(
            "the query string holds characters that are not percent-encoded", parameter="query"
        )
    try:
        # strict: `%ff` would otherwise become U+FFFD, and the answer talk of a service '\ufffd'
        params = parse_qs(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequestError(
            "the query string's percent-encoded bytes are not UTF-8", parameter="query"
        ) from None
    return parse_token_request(params)


def parse_token_request(params: Mapping[str, Sequence[str]]) -> TokenRequest:
    """Parse query parameters (each name mapped to all its values)."""
    return TokenRequest(
        service=_single(params, "service"),
        scopes=tuple(parse_scopes(params.get("scope", ()))),
        account=_single(params, "account"),
        client_id=_single(params, "client_id"),
        offline_token=_flag(params, "offline_token"),
    )


def stated_in_query(query: str) -> tuple[str | None, str | None]:
    """The `service` and `client_id` a query refused for another parameter names, for its
    audit line (it said null for both)."""
    try:
        params = parse_qs(query, keep_blank_values=True, errors="strict") if query.isascii() else {}
    except (UnicodeDecodeError, ValueError):
        return None, None
    return stated(params)


def stated(params: Mapping[str, Sequence[str]]) -> tuple[str | None, str | None]:
    """The `service` and `client_id` of a refused request: each when it is one valid value."""
    return _stated(params, "service"), _stated(params, "client_id")


def _stated(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    try:
        return _single(params, name) or None
    except InvalidRequestError:
        return None


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = list(dict.fromkeys(params.get(name, ())))
    if len(values) > 1:
        raise InvalidRequestError(f"parameter {name} given more than once", parameter=name)
    if not values:
        return None
    value = values[0]
    if len(value) > MAX_PARAM_LENGTH:
        raise InvalidRequestError(
            f"parameter {name} longer than {MAX_PARAM_LENGTH} characters", parameter=name
        )
    if not value.isprintable():
        raise InvalidRequestError(
            f"parameter {name} holds a control or invisible character", parameter=name
        )
    return value


def _flag(params: Mapping[str, Sequence[str]], name: str) -> bool:
    value = (_single(params, name) or "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequestError(f"parameter {name} must be true or false", parameter=name)


def access_claim(scopes: Sequence[Scope]) -> list[dict[str, Any]]:
    """The JWT `access` claim: one entry per requested resource, with the granted actions."""
    entries: list[dict[str, Any]] = []
    for scope in scopes:
        entry: dict[str, Any] = {"type": scope.type, "name": scope.name}
        if scope.resource_class:
            entry["class"] = scope.resource_class
        entry["actions"] = list(scope.actions)
        entries.append(entry)
    return entries


def build_claims(
    *,
    issuer: str,
    subject: str,
    audience: str,
    access: Sequence[Scope],
    issued_at: int,
    ttl: int,
    jti: str,
) -> dict[str, Any]:
    """Registry token claims. `aud` is a plain string: registry 2.8 rejects an array. `nbf`
    is NOT_BEFORE_MARGIN seconds before `iat`."""
    return {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": issued_at + ttl,
        "nbf": issued_at - NOT_BEFORE_MARGIN,
        "iat": issued_at,
        "jti": jti,
        "access": access_claim(access),
    }


@functools.lru_cache(maxsize=64)  # every token answered within a second has the same one
def rfc3339(timestamp: int) -> str:
    """'2026-11-28T12:00:00Z': Go clients fail on a timestamp without a zone."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_response(token: str, *, issued_at: int, ttl: int) -> dict[str, Any]:
    """The 200 body: `token` and `access_token` equal, `expires_in` an integer."""
    return {
        "token": token,
        "access_token": token,
        "expires_in": ttl,
        "issued_at": rfc3339(issued_at),
    }
