"""A real HTTP server standing in for an authorization service (a project-membership
database): stdlib ThreadingHTTPServer in a thread, answering the authorization webhook.

`members` maps a repository namespace (`team` for `team/app`) to {account: actions}; the
answer allows, per scope asked, the actions the account has there (`*` for admins). `outage`
(status, body) replaces every answer; every request is recorded (body and headers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.integration.support.webhook_server import start_json_server


@dataclass
class PolicyServer:
    members: dict[str, dict[str, list[str]]]
    outage: tuple[int, bytes] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/authorize"

    def answer(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
        self.requests.append({"body": body, "headers": headers})
        if self.outage is not None:
            return self.outage
        scopes = []
        for scope in body["scopes"]:
            namespace = scope["name"].split("/")[0]
            actions = self.members.get(namespace, {}).get(str(body["account"]), [])
            scopes.append({"type": scope["type"], "name": scope["name"], "actions": actions})
        return 200, json.dumps({"scopes": scopes}).encode()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_policy_server(policy: PolicyServer) -> PolicyServer:
    policy.server = start_json_server(policy.answer)
    return policy
