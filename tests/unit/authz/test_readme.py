"""The README's ACL section stays true: its policy parses, its examples are what the engine does."""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import Path

import pytest

from app.authz.base import Requester
from app.authz.engine import PolicyAuthorizer
from app.authz.policy import Policy, parse_policy
from app.main import main
from app.protocol.scopes import parse_scopes

README = Path(__file__).resolve().parents[3] / "README.md"
SECTION = (
    README.read_text(encoding="utf-8").split("## Access control (ACL)\n", 1)[1].split("\n## ", 1)[0]
)
POLICY_TEXT = SECTION.split("```yaml\n", 1)[1].split("```", 1)[0]
EXAMPLES = re.findall(
    r"^\| (anonymous|\w+)(?: from ([0-9.]+))?: `([^`]+)` \| `?([^`|]+?)`? \|", SECTION, re.M
)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY_TEXT, "acl.yaml")


def test_the_examples_were_found() -> None:
    assert len(EXAMPLES) == 9


@pytest.mark.parametrize(("who", "ip", "scope", "granted"), EXAMPLES)
def test_worked_example(policy: Policy, who: str, ip: str, scope: str, granted: str) -> None:
    account = None if who == "anonymous" else who
    requester = Requester(account, "registry.local", ip=ip_address(ip) if ip else None)
    (result,) = PolicyAuthorizer(lambda: policy).authorize(requester, parse_scopes([scope]))
    assert ",".join(result.actions) or granted == "nothing"


def test_explain_output_is_the_documented_one(
    policy: Policy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    console = SECTION.split("```console\n", 1)[1].split("```", 1)[0]
    command, expected = console.split("\n", 1)
    argv = re.findall(r"'[^']*'|\S+", command.removeprefix("$ registry-auth "))
    (tmp_path / "acl.yaml").write_text(POLICY_TEXT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    assert main([arg.strip("'") for arg in argv]) == 0
    assert capsys.readouterr().out == expected
