"""Rendering an explanation for people (text) and for scripts (JSON-ready data)."""

from __future__ import annotations

from typing import Any

from app.authz.engine import ActionDecision, Explanation, ScopeDecision
from app.authz.policy import Rule


def render_text(explanation: Explanation) -> str:
    lines = [f"policy: {explanation.source}", f"requester: {_requester(explanation)}"]
    for decision in explanation.scopes:
        lines.append("")
        lines.extend(_scope_lines(decision))
    return "\n".join(lines) + "\n"


def _requester(explanation: Explanation) -> str:
    subject = explanation.subject
    who = "anonymous" if subject.account is None else f"account {subject.account!r}"
    groups = ", ".join(
        f"{g} (from the policy)" if g in explanation.policy_groups else g
        for g in sorted(subject.groups)
    )
    if not groups:
        # explain asks no backend: an LDAP or static user's groups come only from --group
        groups = "none" if subject.account is None else "none (a backend's groups: --group)"
    ip = str(subject.ip) if subject.ip is not None else "unknown"
    return f"{who}; groups: {groups}; ip: {ip}; service: {subject.service or '-'}"


def _scope_lines(decision: ScopeDecision) -> list[str]:
    granted = ",".join(decision.granted) or "nothing"
    lines = [str(decision.scope), f"  granted: {granted}"]
    if not decision.applying:
        lines.append("  no rule applies to this request")
    for action in decision.actions:
        lines.extend(_action_lines(action))
    return lines


def _action_lines(action: ActionDecision) -> list[str]:
    if action.granted:
        verdict = "granted"
    elif action.denied_by:
        verdict = "denied (deny wins)"
    else:
        verdict = "not granted: no applying rule allows it"
    lines = [f"  {action.action}: {verdict}"]
    lines.extend(f"    allowed by {_rule(rule)}" for rule in action.allowed_by)
    lines.extend(f"    denied by {_rule(rule)}" for rule in action.denied_by)
    return lines


def _rule(rule: Rule) -> str:
    return f"{rule.label} {rule.text}"


def explanation_data(explanation: Explanation) -> dict[str, Any]:
    """The explanation as plain data (for `--json`)."""
    subject = explanation.subject
    return {
        "policy": explanation.source,
        "requester": {
            "account": subject.account,
            "groups": sorted(subject.groups),
            "groups_from_policy": sorted(explanation.policy_groups),
            "ip": str(subject.ip) if subject.ip is not None else None,
            "service": subject.service,
        },
        "scopes": [_scope_data(decision) for decision in explanation.scopes],
    }


def _scope_data(decision: ScopeDecision) -> dict[str, Any]:
    return {
        "scope": str(decision.scope),
        "granted": list(decision.granted),
        "actions": {
            action.action: {
                "granted": action.granted,
                "allowed_by": [_rule_data(rule) for rule in action.allowed_by],
                "denied_by": [_rule_data(rule) for rule in action.denied_by],
            }
            for action in decision.actions
        },
    }


def _rule_data(rule: Rule) -> dict[str, Any]:
    return {"index": rule.index, "rule": rule.text}
