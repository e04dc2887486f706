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
    with pytest.raises(
        PolicyError,
        match=r"rules\[0\].*\(and 1 more problem\(s\): `registry-auth acl check` lists them\)$",
    ):
        parse_policy(text, "p.yaml")


def test_empty_rules_is_valid_and_grants_nothing() -> None:
    policy = parse_policy("rules: []\n", "p.yaml")
    assert policy.rules == ()


@pytest.mark.parametrize(
    ("value", "kind"),
    [("{}", "a mapping"), ('""', "a string"), ("0", "a number"), ("false", "a boolean")],
)
def test_rules_of_the_wrong_type_are_refused_even_when_empty(value: str, kind: str) -> None:
    """`rules: {}` loaded as no rule (every scope `"actions": []`, silently): an empty value is
    falsy, and was read as `[]`. Only `rules: []` and `rules:` alone (null) are no rule."""
    with pytest.raises(PolicyError) as caught:
        parse_policy(f"groups: {{ci: [jenkins]}}\nrules: {value}\n", "acl.yaml")
    assert caught.value.problems == [f"acl.yaml: rules: must be a list of rules, not {kind}"]
    for no_rule in ("rules: []\n", "rules:\n", "groups:\nrules:\n"):
        assert parse_policy(no_rule, "acl.yaml").rules == ()


@pytest.mark.parametrize(
    ("value", "kind"),
    [("", "null"), ("[]", "a list"), ('""', "a string"), ("false", "a boolean"), ("0", "a number")],
)
def test_a_match_of_the_wrong_type_is_refused_not_read_as_match_everything(
    value: str, kind: str
) -> None:
    """`match: []` (or `match:` with every condition commented out) was read as `match: {}`:
    the rule applied to every request, anonymous ones included."""
    text = (
        "rules:\n  - match: {name: 'team/**'}\n    allow: [pull]\n"
        f"  - match: {value}\n    allow: [push]\n"
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "acl.yaml")
    assert caught.value.problems == [
        f"acl.yaml: rules[1].match: must be a mapping of conditions, not {kind} "
        "(write `match: {}` to match every request)"
    ]


def test_anonymous_null_is_refused_not_read_as_no_condition() -> None:
    """`anonymous:` with no value was no condition: the rule held for anonymous requests too."""
    text = "rules:\n  - match: {anonymous: , name: 'team/**'}\n    allow: [push]\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "acl.yaml")
    assert caught.value.problems == [
        "acl.yaml: rules[0].match.anonymous: must be true or false, not null"
    ]


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
