"""A real HTTP server standing in for an OpenID Connect issuer (GitLab, GitHub Actions, a
Kubernetes API server): its discovery document and its keys (JWKS), stdlib ThreadingHTTPServer
in a thread; and the ID tokens it would hand a CI job, signed with its key.

`down` makes every request fail (500), `requests` records the paths asked, so tests can check
how often the keys were fetched.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class OidcIssuer:
    keys: dict[str, Key] = field(default_factory=dict)  # kid -> private key
    down: bool = False
    requests: list[str] = field(default_factory=list)
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
        **claims: Any,
    ) -> str:
        """An ID token as the issuer signs one: iss, aud, iat, exp, then `claims`."""
        now = int(time.time())
        body = {"iss": self.url, "iat": now, "nbf": now, "exp": now + lifetime, **claims}
        signer = key or self.keys[kid]
        algorithm = "RS256" if isinstance(signer, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(
            body, signer, algorithm=algorithm, headers={"kid": kid, **(headers or {})}
        )

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(path)
        if self.down:
            return 500, {"error": "down"}
        if path == "/.well-known/openid-configuration":
            return 200, {"issuer": self.url, "jwks_uri": self.url + "/keys"}
        if path == "/keys":
            return 200, self.jwks()
        return 404, {}

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_oidc_issuer() -> OidcIssuer:
    issuer = OidcIssuer()
    issuer.add_key("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = issuer.answer(self.path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_: Any) -> None:  # keep pytest output clean
            return

    issuer.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.server.daemon_threads = True
    threading.Thread(target=issuer.server.serve_forever, daemon=True).start()
    return issuer
