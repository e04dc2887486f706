"""Hot reload of the ACL through the service: a new policy swaps in whole; a broken one does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.authz.base import Requester
from app.authz.engine import PolicyAuthorizer
from app.authz.policy import Policy, parse_policy
from app.protocol.scopes import Scope, parse_scopes
from app.reload import Reloadable
from app.service import TokenService
from app.settings import load_settings

ALLOW_PULL = "rules:\n  - match: {name: 'team/**'}\n    allow: [pull]\n"
ALLOW_PUSH = "rules:\n  - match: {name: 'team/**'}\n    allow: [pull, push]\n"
BROKEN = "rules:\n  - match: {name: 'team/**'}\n    allow: [pull, pussh]\n"
SCOPES = parse_scopes(["repository:team/app:pull,push"])
ANONYMOUS = Requester(None, "registry.local")


def replace(path: Path, text: str) -> None:
    """Write as editors and config tools do: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def actions(service: TokenService) -> tuple[str, ...]:
    (scope,) = service.authorizer.authorize(ANONYMOUS, SCOPES)
    return scope.actions


@pytest.fixture
def service(rsa_keys_dir: Path, tmp_path: Path) -> tuple[TokenService, Path]:
    acl = tmp_path / "acl.yaml"
    acl.write_text(ALLOW_PULL, encoding="utf-8")
    settings = load_settings(
        overrides={"keys_dir": str(rsa_keys_dir), "htpasswd": None, "acl": str(acl)}
    )
    return TokenService.from_settings(settings), acl


def acl_reloadable(service: TokenService) -> Reloadable[Any]:
    (item,) = [r for r in service.reloadables if r.name.startswith("ACL ")]
    return item


def test_edit_takes_effect_on_the_next_check(service: tuple[TokenService, Path]) -> None:
    token_service, acl = service
    item = acl_reloadable(token_service)
    assert actions(token_service) == ("pull",)
    replace(acl, ALLOW_PUSH)
    assert item.reload_if_changed() is True
    assert actions(token_service) == ("pull", "push")


def test_broken_edit_keeps_the_old_policy(
    service: tuple[TokenService, Path], caplog: pytest.LogCaptureFixture
) -> None:
    token_service, acl = service
    item = acl_reloadable(token_service)
    replace(acl, BROKEN)
    assert item.reload_if_changed() is False
    assert actions(token_service) == ("pull",)
    assert item.last_error is not None
    assert "rules[0].allow: unknown action 'pussh'" in item.last_error
    assert "keeping the previous one" in caplog.text
    assert "acl.yaml: rules[0].allow" in caplog.text
    # Fixing the file is picked up again.
    replace(acl, ALLOW_PUSH)
    assert item.reload_if_changed() is True
    assert actions(token_service) == ("pull", "push")


def test_one_request_sees_one_policy() -> None:
    """A reload between two scopes of one request must not mix two policies."""
    policies = iter([parse_policy(ALLOW_PUSH, "a"), parse_policy(ALLOW_PULL, "b")])
    calls: list[Policy] = []

    def current() -> Policy:
        calls.append(next(policies))
        return calls[-1]

    scopes = [Scope("repository", "team/a", ("push",)), Scope("repository", "team/b", ("push",))]
    granted = PolicyAuthorizer(current).authorize(ANONYMOUS, scopes)
    assert [s.actions for s in granted] == [("push",), ("push",)]
    assert len(calls) == 1


def test_a_reload_to_no_rule_is_applied_and_said(
    service: tuple[TokenService, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Valid, but most likely a mistake (every rule commented out): it was applied with only
    "reloaded ACL ...", while an emptied users file gets a warning."""
    token_service, acl = service
    replace(acl, "rules: []\n")
    with caplog.at_level("WARNING", logger="app.reload"):
        assert acl_reloadable(token_service).reload() is True
    assert actions(token_service) == ()
    assert f"ACL {acl} now has no rule (it had 1): every request is granted nothing" in (
        caplog.text
    )
