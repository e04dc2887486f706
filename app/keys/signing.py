"""Signing registry tokens with a loaded key (never a PEM string: PyJWT would re-parse it).

A token is the compact JWS that `jwt.encode` builds: `base64url(header).base64url(claims).
base64url(signature)`, with the same header fields (`alg`, `typ`, `kid`, `x5c`). Two of its
costs do not depend on the token, so they are paid once: the header segment (with `x5c` it
carries the whole certificate, base64 inside base64url) is rendered once per key and kept on
it, and PyJWT's algorithm object is looked up once. The signature itself is PyJWT's algorithm
(RS256: PKCS#1 v1.5 over SHA-256; ES256: the raw r||s pair JWS wants), the claims are rendered
by orjson.
"""

from __future__ import annotations

import binascii
import functools
from typing import Any

import jwt
import orjson
from jwt.algorithms import Algorithm as JWTAlgorithm

from app.keys.model import SigningKey


def token_headers(key: SigningKey, *, x5c: bool) -> dict[str, Any]:
    """`kid` = libtrust fingerprint (registry 2.x); `x5c` = [signing cert] (2.x and 3.x).

    With both, every registry version accepts the token (protocol.md §4, key identification).
    """
    headers: dict[str, Any] = {"alg": key.algorithm.value, "typ": "JWT", "kid": key.kid}
    if x5c:
        headers["x5c"] = [key.x5c]
    return headers


def sign_token(key: SigningKey, claims: dict[str, Any], *, x5c: bool = True) -> str:
    header = key.header_segments.get(x5c)
    if header is None:
        header = key.header_segments[x5c] = base64url(orjson.dumps(token_headers(key, x5c=x5c)))
    signing_input = b".".join((header, base64url(orjson.dumps(claims))))
    signature = _algorithm(key.algorithm.value).sign(signing_input, key.private_key)
    return (signing_input + b"." + base64url(signature)).decode("ascii")


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def base64url(data: bytes) -> bytes:
    """Unpadded base64url (RFC 7515 §2), as PyJWT's `base64url_encode` writes it, in one C call
    and a translation instead of three layers of the base64 module: it runs three times per
    token."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


@functools.cache
def _algorithm(name: str) -> JWTAlgorithm:
    return jwt.get_algorithm_by_name(name)
