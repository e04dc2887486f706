"""The built-in policy used when no ACL file is configured.

Authenticated accounts may pull and push every repository; anonymous requests get nothing;
nobody gets delete or the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.authz.base import Requester
from app.protocol.scopes import Scope

_AUTHENTICATED_REPOSITORY_ACTIONS = frozenset({"pull", "push"})


class DefaultAuthorizer:
    def authorize(self, requester: Requester, scopes: Sequence[Scope]) -> list[Scope]:
        return [scope.with_actions(self._allowed(requester, scope)) for scope in scopes]

    @staticmethod
    def _allowed(requester: Requester, scope: Scope) -> tuple[str, ...]:
        if requester.anonymous or scope.type != "repository":
            return ()
        return tuple(a for a in scope.actions if a in _AUTHENTICATED_REPOSITORY_ACTIONS)
