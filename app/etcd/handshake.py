"""How a TLS problem with etcd reads, the same from both clients (python-etcd for v2, the v3
gateway's): a handshake etcd refused, a TLS file that is not there."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NamedTuple, Protocol

# How a server that refuses our client certificate (or its absence) ends a TLS 1.3 handshake,
# seen from here: it hangs up (EOF), or its alert arrives first (as often as not under load).
_CLIENT_CERT_REFUSED = ("EOF occurred", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED")


# A read timeout: the connection was taken (the port is open, the handshake done), then nothing.
# Worth telling apart from "cannot connect": etcd is there but stopped, hung or overloaded.
NO_ANSWER = (
    "timed out waiting for an answer "
    "(etcd took the connection but did not reply: is it hung or overloaded?)"
)


def refused_certificate(error: str) -> str | None:
    """The operator's line for a handshake that ended over our client certificate; None for
    any other error."""
    if not any(sign in error for sign in _CLIENT_CERT_REFUSED):
        return None
    return (
        f"etcd ended the TLS handshake ({error}): does it serve TLS there (or is the endpoint "
        "http://), and does it want a client certificate, signed by a CA it trusts?"
    )


class TlsFiles(Protocol):
    """What both clients' settings have: the CA bundle and the client pair, each optional."""

    @property
    def ca_cert(self) -> Path | None: ...
    @property
    def client_cert(self) -> Path | None: ...
    @property
    def client_key(self) -> Path | None: ...


class TlsFileProblem(NamedTuple):
    """A TLS file that cannot be used: the setting at fault (`ca_cert`, `client_cert`,
    `client_key`), what is wrong with it (naming the file), and the line both clients say."""

    setting: str
    detail: str
    message: str


def unreadable_tls_file(files: TlsFiles) -> str | None:
    """`ca_cert /etc/etcd/ca.pem: No such file or directory` for the first named file that
    cannot be read, else None. Both clients report a missing file as a bare `[Errno 2]` that
    names neither the file nor the setting."""
    problem = tls_file_problem(files)
    return None if problem is None else problem.message


def tls_file_problem(files: TlsFiles) -> TlsFileProblem | None:
    """The first TLS file that cannot be read or loaded, else None (unreadable_tls_file)."""
    for setting in ("ca_cert", "client_cert", "client_key"):
        path: Path | None = getattr(files, setting)
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            return _problem(setting, f"{path}: {exc.strerror or exc}")
    return _unloadable(files)


def _problem(setting: str, detail: str, at_fault: str | None = None) -> TlsFileProblem:
    return TlsFileProblem(at_fault or setting, detail, f"{setting} {detail}")


def _unloadable(files: TlsFiles) -> TlsFileProblem | None:
    """A CA bundle or client pair that the TLS library refuses: python-etcd (v2) reported it
    as `cannot connect ([X509: KEY_VALUES_MISMATCH] ...)`, which reads as a network problem."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if files.ca_cert is not None:
        try:
            context.load_verify_locations(cafile=str(files.ca_cert))
        except ssl.SSLError as exc:
            return _problem(
                "ca_cert", f"{files.ca_cert}: not PEM certificates ({exc.reason or exc})"
            )
    if files.client_cert is not None and files.client_key is not None:
        try:
            context.load_cert_chain(str(files.client_cert), str(files.client_key))
        except ssl.SSLError as exc:
            why = "the key is not the certificate's" if exc.reason == "KEY_VALUES_MISMATCH" else ""
            detail = (
                f"{files.client_cert} and client_key {files.client_key} do not load as a pair "
                f"({why or exc.reason or exc})"
            )
            return _problem("client_cert", detail, at_fault="client_key")  # the key is at fault
    return None
