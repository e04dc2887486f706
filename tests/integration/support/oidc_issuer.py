"""A real HTTP server standing in for an OpenID Connect issuer (GitLab, GitHub Actions, a
Kubernetes API server): its discovery document and its keys (JWKS), stdlib ThreadingHTTPServer
in a thread; and the ID tokens it would hand a CI job, signed with its key.

`requests` records the paths asked (how often the keys were fetched); `answers` replaces the
answer to a path (status, body bytes, extra headers); `hold`, when set, keeps every answer
back until the event is set (an issuer that hangs); `trickle` sends bodies a byte at a time.
The same server serves as a forger's HTTP proxy: a proxy is asked for absolute URLs, and it
answers with its own keys whatever the path.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
Answer = tuple[int, bytes, dict[str, str]]


@dataclass
class OidcIssuer:
    keys: dict[str, Key] = field(default_factory=dict)  # kid -> private key
    requests: list[str] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)
    hold: threading.Event | None = None
    trickle: float = 0.0  # seconds between the bytes of an answer's body
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_key(self, kid: str, key: Key | None = None) -> Key:
        self.keys[kid] = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.keys[kid]

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "RS256"
            else:
                jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "ES256"
            published.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": published}

    def token(
        self,
        kid: str = "k1",
        *,
        lifetime: int = 300,
        headers: dict[str, Any] | None = None,
        key: Key | None = None,
        algorithm: str | None = None,
        **claims: Any,
    ) -> str:
        """An ID token as the issuer signs one: iss, iat, nbf, exp, then `claims`."""
        now = int(time.time())
        body = {"iss": self.url, "iat": now, "nbf": now, "exp": now + lifetime, **claims}
        signer = key or self.keys[kid]
        if algorithm is None:
            algorithm = "RS256" if isinstance(signer, rsa.RSAPrivateKey) else "ES256"
        header = {"kid": kid, **(headers or {})}
        return jwt.encode(body, signer, algorithm=algorithm, headers=header)

    def answer(self, target: str) -> Answer:
        if self.hold is not None:
            self.hold.wait(30)
        path = urlsplit(target).path  # a proxy is asked for http://host:port/path
        self.requests.append(path)
        if path in self.answers:
            return self.answers[path]
        if path == "/.well-known/openid-configuration":
            return _json(200, {"issuer": self.url, "jwks_uri": self.url + "/keys"})
        if path == "/keys" or target.startswith("http://"):
            return _json(200, self.jwks())
        return _json(404, {})

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _json(status: int, body: Any) -> Answer:
    return status, json.dumps(body).encode(), {"Content-Type": "application/json"}


def start_oidc_issuer() -> OidcIssuer:
    issuer = OidcIssuer()
    issuer.add_key("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, payload, headers = issuer.answer(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not issuer.trickle:
                self.wfile.write(payload)
                return
            for byte in payload:  # an issuer that sends, but ever so slowly
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(issuer.trickle)

        def log_message(self, *_: Any) -> None:  # keep pytest output clean
            return

    issuer.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.server.daemon_threads = True
    threading.Thread(target=issuer.server.serve_forever, daemon=True).start()
    return issuer
