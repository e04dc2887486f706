"""A real HTTP server standing in for an SSO bridge: stdlib ThreadingHTTPServer in a thread.

Its behaviour is data: `accounts` maps an account to (password, groups); `mode` switches the
whole server to an outage (OUTAGES, "slow") or to names without case ("folding"). Every request
is recorded, so tests can check what the backend sent (JSON body, shared-secret header) and
how often (retries, breaker).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OUTAGES = {
    "500": (500, b'{"error": "boom"}'),
    "garbage": (200, b"<html>login page</html>"),
    # JSON nested past the parser's depth: its RecursionError skipped the retries and breaker.
    "deep": (200, b'{"groups": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "no-groups": (200, b'{"error": "invalid password"}'),  # failure told in a 200's body
    "bad-group": (200, b'{"groups": ["ci\\nops"]}'),
    "robot-account": (200, b'{"groups": [], "account": "robot$ci"}'),  # the robot store's alone
}


@dataclass
class SsoBridge:
    accounts: dict[str, tuple[str, list[str]]]
    secret: str | None = None
    # normal | folding (names without case, answering the account's own spelling) | slow |
    # huge (megabytes of groups) | an outage (OUTAGES)
    mode: str = "normal"
    slow_seconds: float = 2.0
    trickle: float = 0.0  # seconds between the bytes of an answer
    gzipped: bool = False  # answers compressed (Content-Encoding: gzip) whatever was asked
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/check"

    def answer(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
        self.requests.append({"body": body, "headers": headers})
        if self.mode in OUTAGES:
            return OUTAGES[self.mode]
        if self.mode == "slow":
            time.sleep(self.slow_seconds)
        if self.mode == "huge":  # 2.6 MB of groups, all of them well-formed
            return 200, json.dumps({"groups": [f"g{n}" for n in range(300_000)]}).encode()

        if self.secret is not None and headers.get("x-registry-auth-secret") != self.secret:
            return 403, b"{}"
        typed = str(body.get("account"))
        name = typed.strip().lower() if self.mode == "folding" else typed
        known = self.accounts.get(name)
        if known is None or known[0] != body.get("password"):
            return 401, b"{}"
        answer: dict[str, Any] = {"groups": known[1]}
        if self.mode == "folding":
            answer["account"] = name
        return 200, json.dumps(answer).encode()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


Answer = Callable[[dict[str, Any], dict[str, str]], tuple[int, bytes]]


def start_json_server(
    answer: Answer,
    trickle: Callable[[], float] = lambda: 0.0,
    gzipped: Callable[[], bool] = lambda: False,
) -> ThreadingHTTPServer:
    """A server answering each JSON POST with answer(body, lower-cased headers); the body a
    byte at a time, `trickle()` seconds apart, when that is not 0; gzip'd when `gzipped()`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, payload = answer(body, headers)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if gzipped():
                payload = gzip.compress(payload)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            delay = trickle()
            if not delay:
                self.wfile.write(payload)
                return
            for byte in payload:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(delay)

        def log_message(self, *_: Any) -> None:  # keep pytest output clean
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_sso_bridge(bridge: SsoBridge) -> SsoBridge:
    bridge.server = start_json_server(bridge.answer, lambda: bridge.trickle, lambda: bridge.gzipped)
    return bridge
