"""Properties of the engine over generated policies and requests (hypothesis)."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.authz.base import Requester
from app.authz.default import DefaultAuthorizer, default_policy
from app.authz.engine import PolicyAuthorizer
from app.authz.policy import ACTIONS, parse_policy
from app.protocol.scopes import Scope

GROUPS = {"dev": ["alice"], "ops": []}
ACCOUNTS = ["alice", "bob", "a*", ".*", "/.*/"]
NAME_PATTERNS = ["a/*", "a/**", "${account}/*", "${group}/**", "/a/.*/", "b/c", "**", "*"]
NAMES = ["a/x", "a/x/y", "alice/x", "bob/x", "dev/x/y", "b/c", "ops/z"]

conditions = st.fixed_dictionaries(
    {},
    optional={
        "account": st.sampled_from(["*", "alice", "/b.*/", "a*"]),
        "anonymous": st.booleans(),
        "group": st.sampled_from(["dev", "ops", ["dev", "ops"]]),
        "type": st.sampled_from(["repository", "registry", "*"]),
        "name": st.sampled_from(NAME_PATTERNS),
        "service": st.sampled_from(["registry.test", "other", "*"]),
        "ip": st.sampled_from(["10.0.0.0/8", "::1", ["192.0.2.0/24", "2001:db8::/32"]]),
    },
).filter(lambda m: not (m.get("anonymous") is True and "account" in m))
action_lists = st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=4, unique=True)
allow_rules = st.builds(lambda m, a: {"match": m, "allow": a}, conditions, action_lists)
deny_rules = st.builds(lambda m, d: {"match": m, "deny": d}, conditions, action_lists)
rules = st.lists(st.one_of(allow_rules, deny_rules), max_size=8)

requesters = st.builds(
    Requester,
    account=st.one_of(st.none(), st.sampled_from(ACCOUNTS)),
    service=st.sampled_from(["registry.test", "other"]),
    groups=st.frozensets(st.sampled_from(["ops", "qa"])),
    ip=st.one_of(st.none(), st.sampled_from(["10.1.2.3", "::1", "192.0.2.9"]).map(ip_address)),
)
repository_scopes = st.builds(
    lambda name, actions: Scope("repository", name, tuple(actions)),
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1, unique=True),
)
scope_lists = st.lists(
    st.one_of(repository_scopes, st.just(Scope("registry", "catalog", ("*",)))), max_size=5
)


def grant(
    rule_list: list[dict[str, Any]], requester: Requester, scopes: list[Scope]
) -> list[Scope]:
    text = yaml.safe_dump({"groups": GROUPS, "rules": rule_list})
    policy = parse_policy(text, "generated.yaml")
    return PolicyAuthorizer(lambda: policy).authorize(requester, scopes)


def is_subset(smaller: list[Scope], larger: list[Scope]) -> bool:
    return all(set(s.actions) <= set(b.actions) for s, b in zip(smaller, larger, strict=True))


@settings(max_examples=200, deadline=None)
@given(rules, requesters, scope_lists)
def test_granted_is_a_subset_of_requested(
    rule_list: list[dict[str, Any]], requester: Requester, scopes: list[Scope]
) -> None:
    granted = grant(rule_list, requester, scopes)
    assert [(s.type, s.name) for s in granted] == [(s.type, s.name) for s in scopes]
    assert is_subset(granted, scopes)


@settings(max_examples=200, deadline=None)
@given(rules, deny_rules, requesters, scope_lists)
def test_adding_a_deny_never_grants_more(
    rule_list: list[dict[str, Any]],
    deny: dict[str, Any],
    requester: Requester,
    scopes: list[Scope],
) -> None:
    before = grant(rule_list, requester, scopes)
    after = grant([*rule_list, deny], requester, scopes)
    assert is_subset(after, before)


@settings(max_examples=200, deadline=None)
@given(rules, allow_rules, requesters, scope_lists)
def test_adding_an_allow_never_grants_less(
    rule_list: list[dict[str, Any]],
    allow: dict[str, Any],
    requester: Requester,
    scopes: list[Scope],
) -> None:
    before = grant(rule_list, requester, scopes)
    after = grant([allow, *rule_list], requester, scopes)
    assert is_subset(before, after)


@settings(max_examples=200, deadline=None)
@given(st.data(), rules, requesters, scope_lists)
def test_rule_order_does_not_matter(
    data: st.DataObject, rule_list: list[dict[str, Any]], requester: Requester, scopes: list[Scope]
) -> None:
    shuffled = data.draw(st.permutations(rule_list))
    assert grant(shuffled, requester, scopes) == grant(rule_list, requester, scopes)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=12), st.sampled_from(NAMES))
def test_no_account_name_reaches_another_namespace(account: str, name: str) -> None:
    rule_list = [{"match": {"account": "*", "name": "${account}/*"}, "allow": ["push"]}]
    scopes = [Scope("repository", name, ("push",))]
    (granted,) = grant(rule_list, Requester(account, "registry.test"), scopes)
    assert (granted.actions == ("push",)) == (name.split("/", maxsplit=1)[0] == account)


OWNERS = st.sampled_from(["alice", "alice/x", "a", "a/x/y", "", "dev", "dev/x"])


@settings(max_examples=200, deadline=None)
@given(OWNERS, st.sampled_from([*NAMES, "alice/x/app", "dev/x/y/z"]), st.booleans())
def test_a_placeholder_is_one_path_component_even_under_double_star(
    owner: str, name: str, as_group: bool
) -> None:
    """`alice/x` (an account or a group) must not own `alice/x/app` inside alice's namespace."""
    placeholder = "${group}" if as_group else "${account}"
    rule_list = [{"match": {"account": "*", "name": f"{placeholder}/**"}, "allow": ["push"]}]
    requester = (
        Requester("someone", "registry.test", frozenset({owner}))
        if as_group
        else Requester(owner, "registry.test")
    )
    (granted,) = grant(rule_list, requester, [Scope("repository", name, ("push",))])
    owns = "/" not in owner and owner != "" and name.split("/", maxsplit=1)[0] == owner
    assert (granted.actions == ("push",)) == owns


@settings(max_examples=300, deadline=None)
@given(requesters, scope_lists)
def test_the_default_as_acl_rules_decides_as_the_default(
    requester: Requester, scopes: list[Scope]
) -> None:
    """`acl explain` on a server without an ACL explains these rules: they must be the policy
    the server applies."""
    policy = default_policy()
    as_rules = PolicyAuthorizer(lambda: policy).authorize(requester, scopes)
    assert as_rules == DefaultAuthorizer().authorize(requester, scopes)
