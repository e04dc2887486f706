"""JWKS documents: RSA and EC keys under both kid formats, checked against published vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.keys.jwks import KidFormat, jwk, jwks_document
from app.keys.kid import PublicKey
from app.keys.model import Algorithm, KeyRing
from app.keys.signing import sign_token
from app.keys.store import load_keyring

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "jwks_keys.json").read_text())["keys"]


def _public_key(case: dict[str, Any]) -> PublicKey:
    if "public_key_pem" in case:
        key = serialization.load_pem_public_key(case["public_key_pem"].encode())
    else:
        n, e = (int.from_bytes(_unb64(case["jwk"][m]), "big") for m in ("n", "e"))
        key = rsa.RSAPublicNumbers(e, n).public_key()
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


CASES = [
    pytest.param(case, fmt, id=f"{case['name']}-{fmt.value}")
    for case in VECTORS
    for fmt in KidFormat
    if fmt.value in case
]


@pytest.mark.parametrize(("case", "kid_format"), CASES)
def test_jwk_kid_matches_vector(case: dict[str, Any], kid_format: KidFormat) -> None:
    member = jwk(_public_key(case), kid_format)
    assert member["kid"] == case[kid_format.value]
    assert member["alg"] == case["alg"]
    assert member["use"] == "sig"


def test_rsa_jwk_members_round_trip_the_rfc_example() -> None:
    case = next(c for c in VECTORS if "jwk" in c)
    member = jwk(_public_key(case))
    assert (member["kty"], member["n"], member["e"]) == ("RSA", case["jwk"]["n"], "AQAB")


def test_libtrust_is_the_default_kid_format() -> None:
    case = VECTORS[0]
    assert jwk(_public_key(case))["kid"] == case["libtrust"]


@pytest.mark.parametrize("kid_format", list(KidFormat))
@pytest.mark.parametrize("keys_dir_fixture", ["rsa_keys_dir", "ec_keys_dir"])
def test_jwks_verifies_a_token_of_the_ring(
    keys_dir_fixture: str, kid_format: KidFormat, request: pytest.FixtureRequest
) -> None:
    """What a JWKS consumer does: find the key by kid, verify the token with it."""
    ring: KeyRing = load_keyring(request.getfixturevalue(keys_dir_fixture))
    document = jwks_document([key.certificate for key in ring.published], kid_format)
    token = sign_token(ring.active, {"sub": "alice", "exp": 4_000_000_000})
    keys = jwt.PyJWKSet.from_dict(document)
    if kid_format is KidFormat.LIBTRUST:
        # Our tokens carry the libtrust kid: a libtrust JWKS finds the key by the header kid.
        signer = keys[jwt.get_unverified_header(token)["kid"]]
    else:
        (signer,) = keys.keys
    claims = jwt.decode(token, signer.key, algorithms=[signer.algorithm_name])
    assert claims["sub"] == "alice"
    expected_kty = "RSA" if ring.active.algorithm is Algorithm.RS256 else "EC"
    assert [k["kty"] for k in document["keys"]] == [expected_kty]


@pytest.mark.parametrize("x5c", [True, False])
@pytest.mark.parametrize("keys_dir_fixture", ["rsa_keys_dir", "ec_keys_dir"])
def test_a_signed_token_is_what_pyjwt_would_build(
    keys_dir_fixture: str, x5c: bool, request: pytest.FixtureRequest
) -> None:
    """sign_token assembles the compact JWS itself: the same header and claims as jwt.encode,
    verifiable by PyJWT with the certificate's key, for both algorithms, with and without x5c."""
    key = load_keyring(request.getfixturevalue(keys_dir_fixture)).active
    claims = {"sub": "alice", "exp": 4_000_000_000, "access": [{"type": "repository"}]}
    token = sign_token(key, claims, x5c=x5c)
    reference = jwt.encode(
        claims,
        key.private_key,
        algorithm=key.algorithm.value,
        headers={"kid": key.kid, **({"x5c": [key.x5c]} if x5c else {})},
    )
    assert jwt.get_unverified_header(token) == jwt.get_unverified_header(reference)
    assert token.split(".")[1] == reference.split(".")[1]  # same claims segment, byte for byte
    public_key = key.certificate.public_key()
    assert jwt.decode(token, public_key, algorithms=[key.algorithm.value]) == claims
    assert sign_token(key, claims, x5c=x5c) != sign_token(key, {**claims, "sub": "bob"}, x5c=x5c)
