"""Evaluating a policy: order-independent, deny wins, and an explanation of every decision.

For each requested scope the applying rules are those whose every condition holds. Allowed =
union of their `allow` minus union of their `deny`; granted = requested ∩ allowed. A `"*"` in
`allow` covers every action. A requested `*` (as in `registry:catalog:*`) is granted only by an
allow of `"*"` and only while nothing is denied: the registry reads a token's `*` as every action
(protocol.md §3), so it must never smuggle in a denied one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from app.authz.base import Requester
from app.authz.policy import Match, Policy, Rule
from app.protocol.scopes import Scope

ALL = "*"


@dataclass(frozen=True, slots=True)
class Subject:
    """The requester as the policy sees it: groups from the backend and from `groups:`."""

    account: str | None
    service: str
    groups: frozenset[str]
    ip: IPv4Address | IPv6Address | None


@dataclass(frozen=True, slots=True)
class ActionDecision:
    action: str
    granted: bool
    allowed_by: tuple[Rule, ...]
    denied_by: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class ScopeDecision:
    scope: Scope
    granted: tuple[str, ...]
    applying: tuple[Rule, ...]
    actions: tuple[ActionDecision, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    source: str
    subject: Subject
    policy_groups: frozenset[str]  # the subject's groups that came from the policy's `groups:`
    scopes: tuple[ScopeDecision, ...]


class PolicyAuthorizer:
    """The Authorizer of an ACL file; `policy` is called once per request (hot reload)."""

    def __init__(self, policy: Callable[[], Policy]) -> None:
        self._policy = policy

    def authorize(self, requester: Requester, scopes: Sequence[Scope]) -> list[Scope]:
        policy = self._policy()  # one snapshot for the whole request
        subject = resolve_subject(policy, requester)
        candidates = requester_rules(policy, subject)
        return [
            scope.with_actions(granted_actions(scope.actions, applying(candidates, subject, scope)))
            for scope in scopes
        ]


def resolve_subject(policy: Policy, requester: Requester) -> Subject:
    groups = requester.groups
    if requester.account is not None:
        groups = groups | policy.member_of.get(requester.account, frozenset())
    ip = requester.ip
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 from a dual-stack socket is 10.1.2.3
    return Subject(requester.account, requester.service, groups, ip)


def requester_rules(policy: Policy, subject: Subject) -> list[Rule]:
    """Rules whose requester conditions hold; evaluated once per request, not per scope."""
    return [rule for rule in policy.rules if _requester_holds(rule.match, subject)]


def applying(candidates: Iterable[Rule], subject: Subject, scope: Scope) -> list[Rule]:
    return [rule for rule in candidates if _resource_holds(rule.match, subject, scope)]


def granted_actions(requested: Iterable[str], rules: Sequence[Rule]) -> tuple[str, ...]:
    allow: set[str] = set().union(*(rule.allow for rule in rules))
    deny: set[str] = set().union(*(rule.deny for rule in rules))
    return tuple(action for action in requested if _granted(action, allow, deny))


def _granted(action: str, allow: set[str], deny: set[str]) -> bool:
    if action == ALL:
        return ALL in allow and not deny
    return (action in allow or ALL in allow) and action not in deny and ALL not in deny


def _requester_holds(match: Match, subject: Subject) -> bool:
    return (
        _identity_holds(match, subject)
        and (match.groups is None or bool(match.groups & subject.groups))
        and (match.services is None or any(p.matches(subject.service) for p in match.services))
        and _network_holds(match, subject)
    )


def _identity_holds(match: Match, subject: Subject) -> bool:
    account = subject.account
    if match.anonymous is not None and match.anonymous != (account is None):
        return False
    if match.accounts is None:
        return True
    # A rule naming accounts never applies to an anonymous request, not even with `"*"`.
    return account is not None and any(p.matches(account) for p in match.accounts)


def _network_holds(match: Match, subject: Subject) -> bool:
    if match.networks is None:
        return True
    ip = subject.ip
    # An unknown client address satisfies no `ip` condition (fail closed).
    return ip is not None and any(ip in network for network in match.networks)


def _resource_holds(match: Match, subject: Subject, scope: Scope) -> bool:
    if match.types is not None and not any(p.matches(scope.type) for p in match.types):
        return False
    if match.names is None:
        return True
    # With a `group` condition, `${group}` stands for the groups it names only: under
    # `{group: dev, name: "${group}/**"}` a member of dev and ops got push on ops/*.
    groups = subject.groups
    if match.narrows_group_slot and match.groups is not None:
        groups = groups & match.groups
    return any(p.matches(scope.name, subject.account, groups) for p in match.names)


def explain(policy: Policy, requester: Requester, scopes: Sequence[Scope]) -> Explanation:
    """Why each requested action was or was not granted, by rule. Same decision as authorize."""
    subject = resolve_subject(policy, requester)
    candidates = requester_rules(policy, subject)
    decisions = []
    for scope in scopes:
        rules = applying(candidates, subject, scope)
        actions = tuple(_explain_action(action, rules) for action in scope.actions)
        decisions.append(
            ScopeDecision(scope, granted_actions(scope.actions, rules), tuple(rules), actions)
        )
    return Explanation(policy.source, subject, subject.groups - requester.groups, tuple(decisions))


def _explain_action(action: str, rules: Sequence[Rule]) -> ActionDecision:
    if action == ALL:
        allowed_by = tuple(r for r in rules if ALL in r.allow)
        denied_by = tuple(r for r in rules if r.deny)
    else:
        allowed_by = tuple(r for r in rules if action in r.allow or ALL in r.allow)
        denied_by = tuple(r for r in rules if action in r.deny or ALL in r.deny)
    granted = bool(allowed_by) and not denied_by
    return ActionDecision(action, granted, allowed_by, denied_by)
