"""The key model: a signing key with its certificate and state, and the ring of published keys."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.errors import KeyStoreError
from app.keys.kid import libtrust_kid

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Algorithm(StrEnum):
    RS256 = "RS256"
    ES256 = "ES256"


class KeyState(StrEnum):
    NEXT = "next"  # published in the bundle, not yet signing
    ACTIVE = "active"  # signs every new token; exactly one
    RETIRING = "retiring"  # published until every token it signed has expired


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key, its certificate and its place in the ring. The repr never shows the key."""

    kid: str
    algorithm: Algorithm
    state: KeyState
    created: datetime
    private_key: PrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)
    # The certificate as one `x5c` entry (standard base64 of its DER), computed once: every
    # token header carries it.
    x5c: str = field(init=False, repr=False, compare=False)
    # The rendered JWS header segment by `x5c` flag, filled by app.keys.signing on first use:
    # looking it up by the key itself would hash every field (certificate included) per token.
    header_segments: dict[bool, bytes] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        object.__setattr__(self, "x5c", base64.b64encode(der).decode("ascii"))

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Every key in a keys directory; exactly one is active."""

    keys: tuple[SigningKey, ...]

    @property
    def active(self) -> SigningKey:
        for key in self.keys:
            if key.state is KeyState.ACTIVE:
                return key
        raise KeyStoreError("no active signing key")

    @property
    def published(self) -> tuple[SigningKey, ...]:
        return self.keys


def algorithm_for(private_key: PrivateKey) -> Algorithm:
    """RS256 for RSA >= 2048 bits, ES256 for EC P-256; anything else cannot sign registry tokens."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise KeyStoreError(f"RSA key of {private_key.key_size} bits: at least 2048 needed")
        return Algorithm.RS256
    if isinstance(private_key.curve, ec.SECP256R1):
        return Algorithm.ES256
    raise KeyStoreError(f"EC curve {private_key.curve.name}: only P-256 (ES256) is supported")


def check_pair(private_key: PrivateKey, certificate: x509.Certificate) -> str:
    """The kid of a key whose certificate really holds its public key."""
    kid = libtrust_kid(private_key.public_key())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = private_key.public_key().public_bytes(serialization.Encoding.DER, spki)
    if certificate.public_key().public_bytes(serialization.Encoding.DER, spki) != mine:
        raise KeyStoreError(f"its certificate (.crt) does not belong to key {kid}")
    return kid
