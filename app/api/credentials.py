"""HTTP Basic credentials from an Authorization header (RFC 7617)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from pydantic import SecretStr

from app.authn.base import Credentials
from app.errors import InvalidRequestError

# HTTP authentication schemes (the IANA registry, and a few in wide use), by lower-case name.
_SCHEMES = {
    name.lower(): name
    for name in (
        "Bearer", "Digest", "Negotiate", "NTLM", "HOBA", "Mutual", "SCRAM-SHA-1",
        "SCRAM-SHA-256", "vapid", "DPoP", "GNAP", "Concealed", "PrivateToken", "Token",
        "OAuth", "AWS4-HMAC-SHA256",
    )
}  # fmt: skip


def request_credentials(headers: Sequence[str]) -> Credentials | None:
    """The credentials of a request's Authorization headers (all of them): 400 when there
    are two. Which one would count? A proxy in front that reads the last one would disagree
    with a server that reads the first about who is logging in."""
    if len(headers) > 1:
        raise InvalidRequestError("Authorization: sent more than once", parameter="Authorization")
    return parse_basic(headers[0] if headers else None)


def parse_basic(header: str | None) -> Credentials | None:
    """None when the client sent no credentials (anonymous); 400 when they are malformed or
    not Basic."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        # Taken for anonymous, a client's credentials would be dropped without a word, and
        # its pull refused later by the registry (`insufficient_scope`). Named back only when
        # it is a known scheme: what comes before the first space may be the secret itself
        # (bare base64 credentials, a raw token, `Basic<TAB>...`).
        shown = repr(_SCHEMES[scheme.lower()]) if scheme.lower() in _SCHEMES else "another"
        raise InvalidRequestError(
            f"Authorization: the token endpoint takes Basic credentials (or none), not {shown}"
            " (a refresh token goes in a POST: grant_type=refresh_token)",
            parameter="Authorization",
        )
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
            "Authorization: the user name holds a control or invisible character, or the "
            "password a NUL",
            parameter="Authorization",
        )
    return Credentials(account, SecretStr(password))
