"""The jwt backend's key handling at its edges, without an issuer: which published keys fit
which algorithm, and a discovery document pointing elsewhere (httpx's MockTransport stands in
for an https issuer)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.authn.jwt_tokens import IssuerDown, IssuerKeys, _usable
from app.backend_settings import JwtBackend

pytestmark = pytest.mark.anyio

RSA_JWK = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048).public_key()))
P256_JWK = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))


@pytest.mark.parametrize(
    ("jwk", "algorithm", "fits"),
    [
        (RSA_JWK, "RS256", True),
        (RSA_JWK, "PS256", True),
        (RSA_JWK, "ES256", False),
        ({**RSA_JWK, "alg": "RS256"}, "RS384", False),  # published for another algorithm
        (P256_JWK, "ES256", True),
        (P256_JWK, "ES384", False),  # ES384 is P-384 (RFC 7518 §3.4)
        (P256_JWK, "RS256", False),
        ({**P256_JWK, "crv": "P-384"}, "ES384", False),  # claims a curve its point is not on
        ({"kty": "oct", "k": "c2VjcmV0"}, "RS256", False),
    ],
)
def test_a_published_key_fits_only_its_own_algorithms(
    jwk: dict[str, Any], algorithm: str, fits: bool
) -> None:
    assert (_usable(jwk, algorithm) is not None) is fits


async def test_an_https_issuer_cannot_send_us_to_fetch_keys_over_http() -> None:
    """Not even on loopback: a discovery document would make us GET this machine's own
    http:// services."""
    asked: list[str] = []

    def issuer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        document = {"issuer": "https://ci.example", "jwks_uri": "http://127.0.0.1:2379/v2/keys"}
        return httpx.Response(200, stream=httpx.ByteStream(json.dumps(document).encode()))

    config = JwtBackend(type="jwt", issuer="https://ci.example", audience="r", claims={"a": "b"})
    keys = IssuerKeys(config, client=httpx.AsyncClient(transport=httpx.MockTransport(issuer)))
    with pytest.raises(IssuerDown, match="must be https:// like the issuer"):
        await keys.key_for("k1", "RS256")
    assert asked == ["https://ci.example/.well-known/openid-configuration"]
    await keys.aclose()
