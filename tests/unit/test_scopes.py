from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import InvalidScopeError
from app.protocol.scopes import MAX_SCOPES, Scope, parse_scope, parse_scopes
from tests.vectors.load import load

CASES = load("scopes.yaml")


@pytest.mark.parametrize("case", CASES["valid"], ids=lambda c: c["text"])
def test_valid_scope_parses(case: dict[str, Any]) -> None:
    scope = parse_scope(case["text"])
    assert scope == Scope(case["type"], case["name"], tuple(case["actions"]), case.get("class"))


@pytest.mark.parametrize("case", CASES["invalid"], ids=lambda c: repr(c["text"]))
def test_invalid_scope_is_rejected_with_a_reason(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidScopeError) as caught:
        parse_scope(case["text"])
    assert case["fragment"] in caught.value.message
    assert caught.value.parameter == "scope"
    assert "\r" not in caught.value.message
    assert "\n" not in caught.value.message


def test_one_value_may_hold_several_scopes_separated_by_spaces() -> None:
    scopes = parse_scopes(["repository:a/b:pull,push repository:c/d:pull", "registry:catalog:*"])
    assert [str(s) for s in scopes] == [
        "repository:a/b:pull,push",
        "repository:c/d:pull",
        "registry:catalog:*",
    ]


def test_scopes_on_the_same_resource_merge() -> None:
    scopes = parse_scopes(["repository:a:pull", "repository:a:push,pull"])
    assert scopes == [Scope("repository", "a", ("pull", "push"))]


def test_no_scope_is_valid() -> None:
    assert parse_scopes([]) == []


def test_too_many_scopes_are_refused() -> None:
    values = [f"repository:r{i}:pull" for i in range(MAX_SCOPES + 1)]
    with pytest.raises(InvalidScopeError, match="more than"):
        parse_scopes(values)


def test_oversized_scope_is_refused() -> None:
    with pytest.raises(InvalidScopeError, match="longer than"):
        parse_scope("repository:" + "a" * 5000 + ":pull")


def test_name_over_255_characters_is_refused() -> None:
    with pytest.raises(InvalidScopeError, match="name longer than 255"):
        parse_scope("repository:" + "/".join(["abcdefghij"] * 24) + ":pull")


@given(st.text(max_size=300))
def test_parser_either_parses_or_raises_a_scope_error(text: str) -> None:
    try:
        scope = parse_scope(text)
    except InvalidScopeError:
        return
    assert parse_scope(str(scope)) == scope
