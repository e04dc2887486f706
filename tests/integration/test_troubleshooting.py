"""The troubleshooting table of docs/operations.md, checked against the real programs: a registry
misconfigured against a working token service, and what skopeo and the registry then print.

Each case also asserts that the guide quotes the message, so the table cannot drift from what
docker-registry 2.8 and skopeo really say.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support.authserver import generate_key
from tests.integration.support.oci import OciImage
from tests.integration.support.registry import TokenAuth, start_registry
from tests.integration.support.skopeo import Skopeo
from tests.integration.support.stack import ALICE, Stack

GUIDE = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")


def misconfigure(stack: Stack, case: str, workdir: Path) -> TokenAuth:
    """The registry's auth block for `case`, everything else right."""
    auth = stack.auth
    if case == "wrong issuer":
        return TokenAuth(auth.realm, auth.service, "someone else", auth.bundle)
    if case == "wrong service":
        return TokenAuth(auth.realm, "other.service", auth.issuer, auth.bundle)
    if case == "bundle not updated":
        generate_key(workdir / "other-keys")  # a bundle without the service's key
        return TokenAuth(auth.realm, auth.service, auth.issuer, workdir / "other-keys/bundle.pem")
    if case == "https realm":
        return TokenAuth(auth.realm.replace("http://", "https://"), auth.service, auth.issuer,
                         auth.bundle)  # fmt: skip
    raise AssertionError(case)


# case -> (what skopeo prints, what the registry logs or None)
CASES = {
    "wrong issuer": ("unauthorized: authentication required", "token from untrusted issuer"),
    "wrong service": ("invalid status code from registry 400 (Bad Request)", None),
    "bundle not updated": (
        "unauthorized: authentication required",
        "unable to verify certificate chain: x509: certificate signed by unknown authority",
    ),
    "https realm": ("http: server gave HTTP response to HTTPS client", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_misconfigured_registry_fails_as_the_guide_says(
    case: str,
    tmp_path: Path,
    stack: Stack,
    skopeo: Skopeo,
    make_image: Callable[..., OciImage],
) -> None:
    client_says, registry_says = CASES[case]
    registry = start_registry(tmp_path / "registry", misconfigure(stack, case, tmp_path))
    try:
        result = skopeo.copy(
            make_image("1.0").ref, registry.ref("trouble/app", "1.0"), dest_creds=ALICE
        )
        assert not result.ok
        assert client_says in result.stderr, str(result)
        if registry_says is not None:
            assert registry_says in registry.log()
    finally:
        registry.stop()
    # The guide quotes both, in the row of this cause.
    row = next(line for line in GUIDE.splitlines() if f"**{case}" in line)
    assert client_says in row
    assert registry_says is None or registry_says in row


def test_the_guide_covers_every_cause_the_brief_names() -> None:
    causes = re.findall(r"\*\*([^*]+)\*\*", GUIDE.split("## Troubleshooting", 1)[1])
    for cause in ["wrong issuer", "wrong service", "bundle not updated", "clock skew",
                  "insufficient_scope", "401 from the token endpoint", "503"]:  # fmt: skip
        assert any(c.startswith(cause) for c in causes), cause
