"""The token's base64url segments and ids: the same text PyJWT and `secrets` write."""

import re

from hypothesis import given
from hypothesis import strategies as st
from jwt.utils import base64url_decode, base64url_encode

from app.keys.signing import base64url
from app.service import new_jti


@given(st.binary(max_size=3000))
def test_segments_read_as_pyjwt_writes_them(data: bytes) -> None:
    encoded = base64url(data)
    assert encoded == base64url_encode(data)
    assert base64url_decode(encoded) == data


def test_no_padding_and_url_safe_alphabet() -> None:
    assert base64url(b"\xfb\xff") == b"-_8"  # standard base64 would be "+/8="


def test_a_jti_is_128_random_bits_in_22_url_safe_characters() -> None:
    ids = {new_jti() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", jti) for jti in ids)
