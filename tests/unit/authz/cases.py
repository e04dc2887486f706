"""Loading the ACL vector files into test cases (shared by the engine and CLI tests)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import yaml

from app.authz.base import Requester
from app.authz.policy import Policy, parse_policy
from app.protocol.scopes import Scope, parse_scopes

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
ACL_VECTORS = VECTORS / "acl"
SERVICE = "registry.test"


@dataclass(frozen=True)
class AclCase:
    file: str
    name: str
    policy_text: str
    requester: Requester
    scopes: list[Scope]
    granted: list[str]

    @property
    def policy(self) -> Policy:
        return parse_policy(self.policy_text, self.file)

    def __str__(self) -> str:
        return f"{self.file}: {self.name}"


def load_acl_cases() -> list[AclCase]:
    cases = []
    for path in sorted(ACL_VECTORS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        policy_text = yaml.safe_dump(data["policy"], sort_keys=False)
        cases.extend(_case(path.name, policy_text, raw) for raw in data["cases"])
    return cases


def _case(file: str, policy_text: str, raw: dict[str, Any]) -> AclCase:
    ip = ip_address(raw["ip"]) if raw.get("ip") else None
    requester = Requester(
        raw["account"], raw.get("service", SERVICE), frozenset(raw.get("groups", [])), ip
    )
    return AclCase(
        file, raw["name"], policy_text, requester, parse_scopes(raw["scopes"]), raw["granted"]
    )


def load_list(name: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((VECTORS / name).read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data
