"""HTTPS served by the service itself, with the certificate and key re-loaded when they change.

uvicorn takes its TLS options once, at start: the server gets one `ssl.SSLContext` made here,
and keeps it. Each pair is loaded into a context of its own (a broken or mismatched pair, or an
expired certificate, is refused there and the old one stays in force); the server's context
hands every new connection, as its handshake starts (the SNI callback, which OpenSSL calls with
or without a server name), to the context of the pair in force. Open connections keep theirs:
no restart and no dropped connection. Loading a new pair into the server's own context would
not do: OpenSSL keeps one certificate per key type there, so an RSA certificate replaced by an
ECDSA one went on being served to every client that offered only RSA signatures. The check runs
on the event loop, the thread that also makes connections.
"""

from __future__ import annotations

import logging
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app.api.scratch import scratch_directory
from app.errors import ConfigError
from app.reload import fingerprint
from app.settings_sections import TlsSettings

log = logging.getLogger(__name__)


class ReloadingTLS:
    """The server's context; ConfigError naming `tls.cert` when the files are unusable."""

    kind = "TLS certificate"  # as /readyz and registry_auth_reload_failing name it

    def __init__(self, settings: TlsSettings, *, serves: bool = True) -> None:
        """`serves`: False in a granian worker, where granian serves the pair the worker was
        started with (a new pair comes with a roll of the workers): a reload there only checks
        the files (for /readyz), and the expiry told stays the served certificate's. A worker
        reported the new one as live while a roll waited and the old one was still served."""
        self.cert, self.key = settings.cert, settings.key
        self._serves = serves
        self._retry_at: datetime | None = None
        self.last_error: str | None = None  # of the last reload: a failed renewal is told
        self._seen = fingerprint([self.cert, self.key])
        try:
            self.context, self.not_after, self.pair = self._load()
        except PairError as exc:
            raise ConfigError(exc.setting, str(exc)) from None
        except (OSError, ValueError, ssl.SSLError) as exc:
            # A file that cannot be read names its own setting: a missing key blamed tls.cert.
            unread = getattr(exc, "filename", None)
            setting = "tls.key" if unread is not None and Path(unread) == self.key else "tls.cert"
            raise ConfigError(setting, f"cannot load {self.cert} with {self.key}: {exc}") from None
        self._current = self.context
        self.context.sni_callback = self._hand_over

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed (or a pair refused as not valid yet has come
        of age); False (old pair kept, logged) on failure."""
        seen = fingerprint([self.cert, self.key])
        due = self._retry_at is not None and datetime.now(UTC) >= self._retry_at
        if seen == self._seen and not due:
            return False
        self._seen, self._retry_at = seen, None
        try:
            loaded = self._load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.error("TLS reload failed, keeping the previous certificate: %s", exc)  # noqa: TRY400 - one line is what an operator needs
            self.last_error = str(exc)
            # Not valid yet: tried again then, the files unchanged (a renewal made ahead).
            self._retry_at = exc.valid_from if isinstance(exc, PairError) else None
            return False
        self.last_error = None
        if not self._serves:  # granian's main process says when the workers roll onto it
            log.debug("TLS certificate %s checked (valid until %s)", self.cert, loaded[1])
            return False
        self._current, self.not_after, self.pair = loaded
        log.info("TLS certificate reloaded from %s (valid until %s)", self.cert, self.not_after)
        return True

    def _hand_over(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, context: ssl.SSLContext
    ) -> None:
        current = self._current
        if current is not context:
            connection.context = current

    def _load(self) -> tuple[ssl.SSLContext, datetime, tuple[bytes, bytes]]:
        """The pair's context, its certificate's expiry, and the pair itself (as read once
        and checked: what granian's workers get copies of, app.api.tls_copies)."""
        cert_pem, key_pem = self.cert.read_bytes(), self.key.read_bytes()
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise PairError("tls.cert", f"{self.cert} holds no PEM certificate") from None
        not_after, now = certificate.not_valid_after_utc, datetime.now(UTC)
        if not_after <= now:
            raise PairError("tls.cert", f"the certificate in {self.cert} expired at {not_after}")
        if certificate.not_valid_before_utc > now:  # every client would refuse it until then
            raise PairError(
                "tls.cert",
                f"the certificate in {self.cert} is not valid before "
                f"{certificate.not_valid_before_utc} (made ahead, or on a host whose clock ran "
                "ahead): tried again then",
                valid_from=certificate.not_valid_before_utc,
            )
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise PairError(
                "tls.key", f"{self.key} holds no PEM private key (without a passphrase)"
            ) from None
        if key.public_key() != certificate.public_key():
            raise PairError(
                "tls.key", f"{self.key} is not the key of the certificate in {self.cert}"
            )
        _warn_if_open(self.key)
        # load_cert_chain reads paths only: the bytes read once go to private copies, so the
        # pair checked is exactly the pair served.
        context = _new_context()
        with scratch_directory("tls-check") as scratch:
            cert_copy, key_copy = scratch / "cert.pem", scratch / "key.pem"
            cert_copy.write_bytes(cert_pem)
            key_copy.touch(mode=0o600)
            key_copy.write_bytes(key_pem)
            context.load_cert_chain(cert_copy, key_copy)
        return context, not_after, (cert_pem, key_pem)


class PairError(ValueError):
    """The pair is unusable, for a reason naming the file and the setting (tls.cert, tls.key)."""

    def __init__(self, setting: str, problem: str, *, valid_from: datetime | None = None) -> None:
        super().__init__(problem)
        self.setting = setting
        self.valid_from = valid_from  # a certificate refused only as not valid yet


_WARNED: set[tuple[Path, int, int]] = set()  # forked workers inherit what was said already


def _warn_if_open(key: Path) -> None:
    """A private key others may read: said once per file and mode (every worker, and the
    process that checks the config, load the pair)."""
    info = key.stat()
    seen = (key, info.st_ino, info.st_mode)
    if info.st_mode & 0o077 and seen not in _WARNED:
        _WARNED.add(seen)
        log.warning(
            "tls.key %s may be read by other users (mode %04o): chmod 600 it",
            key,
            stat.S_IMODE(info.st_mode),
        )


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
