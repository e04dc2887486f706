"""Policies that must be refused, each problem naming the file, the rule index and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.authz.files import load_policy
from app.authz.policy import parse_policy
from app.errors import PolicyError
from tests.unit.authz.cases import load_list

CASES = load_list("acl_invalid.yaml")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_invalid_policy_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(case["policy"], "acl.yaml")
    problems = caught.value.problems
    assert len(problems) == len(case["problems"]), problems
    for problem, expected in zip(problems, case["problems"], strict=True):
        assert expected in problem
    assert str(caught.value).startswith(problems[0])


def test_one_line_summary_counts_the_other_problems() -> None:
    text = "rules:\n  - match: {x: 1}\n    allow: [pull]\n  - match: {}\n    allow: [nope]\n"
    with pytest.raises(PolicyError, match=r"rules\[0\].*\(and 1 more problem\(s\)\)$"):
        parse_policy(text, "p.yaml")


def test_empty_rules_is_valid_and_grants_nothing() -> None:
    policy = parse_policy("rules: []\n", "p.yaml")
    assert policy.rules == ()


def test_rule_rendering_is_the_rule_as_written() -> None:
    text = 'rules:\n  - match: {account: "*", name: "${account}/*"}\n    allow: [pull, push]\n'
    (rule,) = parse_policy(text, "p.yaml").rules
    assert rule.label == "rules[0]"
    assert rule.text == "{match: {account: '*', name: '${account}/*'}, allow: [pull, push]}"


def test_a_policy_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "acl.yaml"
    path.write_bytes(b"rules: []\n# \xff\xfe\n")
    with pytest.raises(PolicyError, match=r"acl.yaml: the ACL file is not UTF-8 text"):
        load_policy(path)
