"""JWKS documents (RFC 7517) of the published keys: for `/.well-known/jwks.json` and for the
file that registry 3.x reads through its `auth.token.jwks` option.

Registry 3.x trusts each JWKS key under its literal `kid` string (protocol.md §4), so the
default kid is the libtrust fingerprint that our token headers carry: one JWKS works with the
tokens every registry version accepts. `rfc7638` is for other consumers of the JWKS.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.errors import KeyStoreError
from app.keys.kid import PublicKey, jwk_public, libtrust_kid, rfc7638_thumbprint
from app.keys.model import Algorithm


class KidFormat(StrEnum):
    LIBTRUST = "libtrust"
    RFC7638 = "rfc7638"


def key_id(public_key: PublicKey, kid_format: KidFormat) -> str:
    if kid_format is KidFormat.RFC7638:
        return rfc7638_thumbprint(public_key)
    return libtrust_kid(public_key)


def jwk(public_key: PublicKey, kid_format: KidFormat = KidFormat.LIBTRUST) -> dict[str, str]:
    """The public JWK of one signing key, with `kid`, `alg` and `use`."""
    algorithm = Algorithm.RS256 if isinstance(public_key, rsa.RSAPublicKey) else Algorithm.ES256
    return {
        **jwk_public(public_key),
        "kid": key_id(public_key, kid_format),
        "alg": algorithm.value,
        "use": "sig",
    }


def certificate_key(certificate: x509.Certificate) -> PublicKey:
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return public_key
    raise KeyStoreError("a certificate in the ring holds neither an RSA nor an EC key")


def jwks_document(
    certificates: Iterable[x509.Certificate], kid_format: KidFormat = KidFormat.LIBTRUST
) -> dict[str, Any]:
    """{"keys": [...]}: one JWK per published certificate, in ring order."""
    return {"keys": [jwk(certificate_key(cert), kid_format) for cert in certificates]}
