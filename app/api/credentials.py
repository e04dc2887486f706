"""HTTP Basic credentials from an Authorization header (RFC 7617)."""

from __future__ import annotations

import base64

from pydantic import SecretStr

from app.authn.base import Credentials
from app.errors import InvalidRequestError


def parse_basic(header: str | None) -> Credentials | None:
    """None when the client sent no Basic credentials (anonymous); 400 when they are malformed."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    # Its length was checked before (limits.max_authorization_length, 431): app.api.limits.
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII in the header
        raise InvalidRequestError(
            "Authorization: Basic credentials are not base64 of UTF-8 user:password",
            parameter="Authorization",
        ) from None
    account, sep, password = decoded.partition(":")
    if not sep:
        raise InvalidRequestError(
            "Authorization: Basic credentials hold no ':' between user and password",
            parameter="Authorization",
        )
    if not account.isprintable() or "\x00" in password:
        raise InvalidRequestError(
            "Authorization: user name or password holds control characters",
            parameter="Authorization",
        )
    return Credentials(account, SecretStr(password))
