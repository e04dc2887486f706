"""The record: what we write, and when a stored value counts as ours (vectors file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.etcd.record import describe, encode_record, matches

VECTORS = json.loads(
    (Path(__file__).parents[2] / "vectors" / "etcd_records.json").read_text(encoding="utf-8")
)
RECORD: dict[str, str] = VECTORS["record"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda case: case["why"])
def test_matches(case: dict[str, Any]) -> None:
    assert matches(case["stored"], RECORD) is case["matches"]


def test_encoded_record_is_compact_json_with_exactly_the_three_keys_in_order() -> None:
    shuffled = {"service": "lain.test", "issuer": "auth server", "realm": "http://auth.test/token"}
    assert encode_record(shuffled) == (
        '{"realm":"http://auth.test/token","issuer":"auth server","service":"lain.test"}'
    )


def test_describe_bounds_a_foreign_value() -> None:
    assert describe(None) == "no value (key absent)"
    long = describe("x" * 5000)
    assert len(long) < 300
    assert "(5000 characters)" in long
