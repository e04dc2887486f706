"""HTTPS served by the service itself, with the certificate and key re-loaded when they change.

uvicorn takes its TLS options once, at start. Instead of those options the server gets one
`ssl.SSLContext` made here; when the files change, the new pair is first loaded into a scratch
context (a broken or mismatched pair is refused there and the old one stays in force), then
into the live context. OpenSSL copies the certificate into each connection when its handshake
starts, so new connections get the new certificate and open ones keep theirs: no restart and no
dropped connection. The check runs on the event loop, the thread that also makes connections.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from app.errors import ConfigError
from app.reload import fingerprint
from app.settings_sections import TlsSettings

log = logging.getLogger(__name__)


class ReloadingTLS:
    """The live server context; ConfigError naming `tls.cert` when the files are unusable."""

    def __init__(self, settings: TlsSettings) -> None:
        self.cert, self.key = settings.cert, settings.key
        self.context = _new_context()
        self._seen = fingerprint([self.cert, self.key])
        try:
            self.not_after = self._load_into(self.context)
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise ConfigError(
                "tls.cert", f"cannot load {self.cert} with {self.key}: {exc}"
            ) from None

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; False (old pair kept, logged) on failure."""
        seen = fingerprint([self.cert, self.key])
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            self.not_after = self._load_into(self.context)
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.error("TLS reload failed, keeping the previous certificate: %s", exc)  # noqa: TRY400 - one line is what an operator needs
            return False
        log.info("TLS certificate reloaded from %s (valid until %s)", self.cert, self.not_after)
        return True

    def _load_into(self, live: ssl.SSLContext) -> datetime:
        cert_pem, key_pem = self.cert.read_bytes(), self.key.read_bytes()
        not_after = x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
        # load_cert_chain reads paths only: the bytes read once go to private copies, so the
        # pair checked in the scratch context is exactly the pair the live context gets.
        with tempfile.TemporaryDirectory(prefix="registry-auth-tls-") as scratch:
            cert_copy, key_copy = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
            cert_copy.write_bytes(cert_pem)
            key_copy.touch(mode=0o600)
            key_copy.write_bytes(key_pem)
            _new_context().load_cert_chain(cert_copy, key_copy)
            live.load_cert_chain(cert_copy, key_copy)
        return not_after


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def use_tls(config: Any, tls: ReloadingTLS | None) -> None:
    """Give a uvicorn Config our live context (its own ssl_* options would be static)."""
    if tls is None:
        return
    config.load()
    config.ssl = tls.context
