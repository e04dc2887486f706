"""Client address resolution, from tests/vectors/client_ip.yaml (pure; no server)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from app.api.client_ip import client_ip
from tests.unit.authz.cases import load_list

CASES = load_list("client_ip.yaml")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_client_ip(case: dict[str, Any]) -> None:
    trusted = [ip_network(cidr) for cidr in case["trusted"]]
    forwarded_for, real_ip = case.get("forwarded_for", []), case.get("real_ip")
    header = case.get("header", "x-forwarded-for")
    got = client_ip(case["peer"], forwarded_for, real_ip, trusted, header)
    expected = ip_address(case["expect"]) if case["expect"] is not None else None
    assert got == expected
