"""The built-in policy used when no ACL file is configured.

Authenticated accounts may pull and push every repository; anonymous requests get nothing;
nobody gets delete or the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.authz.base import Requester
from app.authz.policy import Policy, parse_policy
from app.protocol.scopes import Scope

_AUTHENTICATED_REPOSITORY_ACTIONS = frozenset({"pull", "push"})

# The same policy as an ACL, for `acl explain` on a server without one; tests/unit/authz check
# that both decide alike. (The server keeps DefaultAuthorizer: no rule matching per scope.)
DEFAULT_SOURCE = "built-in default (no `acl` in the config)"
_DEFAULT_ACL = """
rules:
  - match: {account: "*", type: repository}
    allow: [pull, push]
"""


def default_policy() -> Policy:
    """The built-in policy as ACL rules: what `acl explain` explains when no ACL is set."""
    return parse_policy(_DEFAULT_ACL, DEFAULT_SOURCE)


class DefaultAuthorizer:
    def authorize(self, requester: Requester, scopes: Sequence[Scope]) -> list[Scope]:
        return [scope.with_actions(self._allowed(requester, scope)) for scope in scopes]

    @staticmethod
    def _allowed(requester: Requester, scope: Scope) -> tuple[str, ...]:
        if requester.anonymous or scope.type != "repository":
            return ()
        return tuple(a for a in scope.actions if a in _AUTHENTICATED_REPOSITORY_ACTIONS)
