"""Every policy case in tests/vectors/acl/: the engine grants exactly what the file expects."""

from __future__ import annotations

import pytest

from app.authz.engine import PolicyAuthorizer, explain
from tests.unit.authz.cases import AclCase, load_acl_cases

CASES = load_acl_cases()


def test_vectors_are_there() -> None:
    files = {case.file for case in CASES}
    assert len(CASES) >= 60
    assert {"placeholders.yaml", "injection.yaml", "deny.yaml", "ip.yaml"} <= files


@pytest.mark.parametrize("case", CASES, ids=str)
def test_granted_as_expected(case: AclCase) -> None:
    policy = case.policy
    granted = PolicyAuthorizer(lambda: policy).authorize(case.requester, case.scopes)
    assert [str(scope) for scope in granted] == case.granted


@pytest.mark.parametrize("case", CASES, ids=str)
def test_explain_agrees_with_the_decision(case: AclCase) -> None:
    explanation = explain(case.policy, case.requester, case.scopes)
    assert [
        f"{d.scope.resource_type}:{d.scope.name}:{','.join(d.granted)}" for d in explanation.scopes
    ] == case.granted
    for decision in explanation.scopes:
        for action in decision.actions:
            # A granted action names the rule that allowed it; a refused one names why.
            assert action.granted == (bool(action.allowed_by) and not action.denied_by)
            assert action.granted == (action.action in decision.granted)
            for rule in action.allowed_by + action.denied_by:
                assert rule in decision.applying
