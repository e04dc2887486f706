from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.keys.kid import jwk_public, libtrust_kid, rfc7638_thumbprint
from tests.vectors.load import load

VECTORS = load("kids.yaml")


def _public(pem: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_libtrust_kid_matches_vector(vector: dict[str, Any]) -> None:
    assert libtrust_kid(_public(vector["pem"])) == vector["libtrust"]


@pytest.mark.parametrize("vector", [v for v in VECTORS if "rfc7638" in v], ids=lambda v: v["name"])
def test_rfc7638_thumbprint_matches_vector(vector: dict[str, Any]) -> None:
    assert rfc7638_thumbprint(_public(vector["pem"])) == vector["rfc7638"]


def test_rfc7638_example_key() -> None:
    # RFC 7638 §3.1's example RSA key and its thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    modulus = int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    assert rfc7638_thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert jwk_public(key)["e"] == "AQAB"
    assert jwk_public(key)["n"] == n


def test_kid_shape() -> None:
    kid = libtrust_kid(ec.generate_private_key(ec.SECP256R1()).public_key())
    groups = kid.split(":")
    assert len(groups) == 12
    assert all(len(g) == 4 for g in groups)
    assert set(kid.replace(":", "")) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
