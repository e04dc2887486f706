"""A token service and a registry that trusts it, wired together, plus a skopeo per test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.support.authserver import AuthServer, start_auth_server
from tests.integration.support.registry import Registry, TokenAuth, start_registry


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
