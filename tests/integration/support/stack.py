"""A token service and a registry that trusts it, wired together, plus a skopeo per test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.support.authserver import AuthServer, start_auth_server
from tests.integration.support.registry import Registry, TokenAuth, start_registry
from tests.integration.support.skopeo import Creds

# The users every stack knows (a stack started with users=None knows nobody).
USERS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}
ALICE = Creds("alice", USERS["alice"])
BOB = Creds("bob", USERS["bob"])


@dataclass
class Stack:
    auth: AuthServer
    registry: Registry

    def logs(self) -> str:
        """Both programs' logs, for assertion messages."""
        return f"{self.auth.log()}\n{self.registry.log()}"

    def stop(self) -> None:
        # Registry first: it is the client of nothing, the auth server serves it.
        self.registry.stop()
        self.auth.stop()


def start_stack(
    workdir: Path,
    *,
    algorithm: str = "RS256",
    users: dict[str, str] | None = None,
    x5c: bool = True,
    **auth_options: Any,
) -> Stack:
    """Start the token service (new key, users), then a registry pointed at its realm/bundle."""
    auth = start_auth_server(
        workdir / "auth", algorithm=algorithm, users=users, x5c=x5c, **auth_options
    )
    try:
        token_auth = TokenAuth(auth.realm, auth.service, auth.issuer, auth.bundle)
        registry = start_registry(workdir / "registry", token_auth)
    except BaseException:
        auth.stop()
        raise
    return Stack(auth, registry)


class StackPool:
    """Stacks started on first use, keyed by options; all stopped at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._stacks: dict[tuple[Any, ...], Stack] = {}

    def get(self, algorithm: str = "RS256", *, x5c: bool = True) -> Stack:
        key = (algorithm, x5c)
        if key not in self._stacks:
            name = f"{algorithm}-{'x5c' if x5c else 'kid'}"
            self._stacks[key] = start_stack(
                self.workdir / name, algorithm=algorithm, users=USERS, x5c=x5c
            )
        return self._stacks[key]

    def logs(self) -> str:
        return "\n".join(stack.logs() for stack in self._stacks.values())

    def stop_all(self) -> None:
        for stack in self._stacks.values():
            stack.stop()
        self._stacks.clear()
