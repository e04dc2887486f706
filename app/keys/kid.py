"""Key identifiers: the libtrust fingerprint (registry 2.x) and the RFC 7638 thumbprint (3.x)."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def libtrust_kid(public_key: PublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER, first 30 bytes, base32, 12 groups of 4.

    This is what registry 2.x computes for the certificates of its rootcertbundle
    (libtrust's keyIDFromCryptoKey) and matches against the JWT header's `kid`.
    """
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, 48, 4))


def jwk_public(public_key: PublicKey) -> dict[str, str]:
    """The public JWK members (RFC 7517/7518) of an RSA or EC P-256 key."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}
    ec_numbers = public_key.public_numbers()
    size = (public_key.curve.key_size + 7) // 8
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(ec_numbers.x.to_bytes(size, "big")),
        "y": _b64(ec_numbers.y.to_bytes(size, "big")),
    }


def rfc7638_thumbprint(public_key: PublicKey) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without white space."""
    members = jwk_public(public_key)
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[members["kty"]]
    canonical = json.dumps({k: members[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64_uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))
