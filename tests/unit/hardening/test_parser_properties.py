"""Properties of the input parsers (hypothesis): Basic credentials and scopes."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api.credentials import parse_basic
from app.errors import InvalidRequestError, InvalidScopeError
from app.protocol.scopes import MAX_SCOPES, parse_scope, parse_scopes

ACCOUNTS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn", "Zs")),
    min_size=1,
    max_size=40,
).filter(lambda a: ":" not in a and a.isprintable())
PASSWORDS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60).filter(
    lambda p: "\x00" not in p
)


@given(ACCOUNTS, PASSWORDS)
def test_basic_credentials_round_trip(account: str, password: str) -> None:
    header = "Basic " + base64.b64encode(f"{account}:{password}".encode()).decode()
    credentials = parse_basic(header)
    assert credentials is not None
    assert credentials.account == account
    assert credentials.password.get_secret_value() == password
    if password:
        assert "SecretStr('**********')" in repr(credentials)  # the password never prints


@given(st.binary(max_size=200))
def test_any_basic_payload_parses_or_is_a_400(raw: bytes) -> None:
    try:
        credentials = parse_basic("Basic " + base64.b64encode(raw).decode())
    except InvalidRequestError as exc:
        status = exc.status
        assert status == 400
        return
    assert credentials is not None
    assert credentials.account.isprintable()
    assert "\x00" not in credentials.password.get_secret_value()


@given(st.text(max_size=200))
def test_any_authorization_header_is_anonymous_credentials_or_a_400(header: str) -> None:
    try:
        credentials = parse_basic(header)
    except InvalidRequestError as exc:
        parameter = exc.parameter
        assert parameter == "Authorization"
        return
    assert credentials is None or header.partition(" ")[0].lower() == "basic"


@given(st.text(max_size=200))
def test_any_basic_value_is_credentials_or_a_400(value: str) -> None:
    """Whatever follows `Basic ` (a header's bytes reach the parser as latin-1 text)."""
    try:
        parse_basic("Basic " + value)
    except InvalidRequestError as exc:
        parameter = exc.parameter
        assert parameter == "Authorization"


@pytest.mark.parametrize(
    "value", ["\u00c3\u00a9", "YWxpY2U6\u00ff", "\u0080", "\uff39\uff37\uff38"]
)
def test_non_ascii_where_base64_belongs_is_a_400(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="not base64"):
        parse_basic("Basic " + value)


COMPONENT = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
NAMES = st.lists(COMPONENT, min_size=1, max_size=4).map("/".join)
ACTIONS = st.lists(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1, max_size=4)


@given(st.sampled_from(["repository", "registry", "repository(plugin)"]), NAMES, ACTIONS)
def test_generated_valid_scopes_parse_to_what_was_written(
    resource_type: str, name: str, actions: list[str]
) -> None:
    scope = parse_scope(f"{resource_type}:{name}:{','.join(actions)}")
    assert scope.resource_type == resource_type
    assert scope.name == name
    assert scope.actions == tuple(dict.fromkeys(actions))


@given(st.lists(st.tuples(NAMES, ACTIONS), max_size=MAX_SCOPES))
def test_merged_scopes_keep_every_action_asked_for(requests: list[tuple[str, list[str]]]) -> None:
    values = [f"repository:{name}:{','.join(actions)}" for name, actions in requests]
    merged = parse_scopes(values)
    assert len({s.name for s in merged}) == len(merged)  # one entry per resource
    for name, actions in requests:
        (entry,) = [s for s in merged if s.name == name]
        assert set(actions) <= set(entry.actions)


@given(st.integers(min_value=MAX_SCOPES + 1, max_value=MAX_SCOPES * 3))
def test_more_scopes_than_the_limit_is_always_refused(count: int) -> None:
    with pytest.raises(InvalidScopeError, match="more than"):
        parse_scopes([" ".join(["repository:a/b:pull"] * count)])
