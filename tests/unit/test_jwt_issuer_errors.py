"""How the jwt backend names a failure to fetch the issuer's keys (no network: the errors are
built as httpx raises them)."""

from __future__ import annotations

import ssl

import httpx

from app.authn.jwt_tokens import _transport_problem


def test_an_untrusted_issuer_certificate_is_called_so_not_connect_error() -> None:
    """It read `ConnectError`, as an issuer that is down does: nothing pointed at `ca_file`."""
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_code, refused.verify_message = 20, "unable to get local issuer certificate"
    try:
        try:
            raise refused
        except ssl.SSLError as exc:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from exc
    except httpx.ConnectError as error:
        problem = _transport_problem(error)
    assert problem == (
        "its TLS certificate is not accepted (unable to get local issuer certificate): give the "
        "CA that signed it as `ca_file`"
    )
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch"
    wrapped = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]")
    wrapped.__cause__ = mismatch
    assert _transport_problem(wrapped) == "its TLS certificate is not accepted (Hostname mismatch)"
    assert _transport_problem(httpx.ConnectError("[Errno 111] Connection refused")) == (
        "ConnectError"
    )
