"""How a TLS handshake that etcd refused reads, the same from both clients (python-etcd for v2,
the v3 gateway's)."""

from __future__ import annotations

# How a server that refuses our client certificate (or its absence) ends a TLS 1.3 handshake,
# seen from here: it hangs up (EOF), or its alert arrives first (as often as not under load).
_CLIENT_CERT_REFUSED = ("EOF occurred", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED")


def refused_certificate(error: str) -> str | None:
    """The operator's line for a handshake that ended over our client certificate; None for
    any other error."""
    if not any(sign in error for sign in _CLIENT_CERT_REFUSED):
        return None
    return (
        f"etcd ended the TLS handshake ({error}): "
        "does it want a client certificate, signed by a CA it trusts?"
    )
