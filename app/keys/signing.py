"""Signing registry tokens with a loaded key (never a PEM string: PyJWT would re-parse it)."""

from __future__ import annotations

from typing import Any

import jwt

from app.keys.model import SigningKey


def token_headers(key: SigningKey, *, x5c: bool) -> dict[str, Any]:
    """`kid` = libtrust fingerprint (registry 2.x); `x5c` = [signing cert] (2.x and 3.x).

    With both, every registry version accepts the token (protocol.md §4, key identification).
    """
    headers: dict[str, Any] = {"kid": key.kid}
    if x5c:
        headers["x5c"] = [key.x5c]
    return headers


def sign_token(key: SigningKey, claims: dict[str, Any], *, x5c: bool = True) -> str:
    return jwt.encode(
        claims, key.private_key, algorithm=key.algorithm.value, headers=token_headers(key, x5c=x5c)
    )
