"""The token endpoint with an ACL: trusted-proxy headers decide `ip` rules; the ACL reloads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from app.api.app import create_app
from app.errors import PolicyError
from app.service import TokenService
from app.settings import Settings, load_settings

POLICY = """
rules:
  - match: {ip: "10.0.0.0/8"}
    allow: [pull, push]
  - match: {anonymous: true, name: "public/**"}
    allow: [pull]
"""


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    path = tmp_path / "acl.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def make_settings(
    rsa_keys_dir: Path, acl: Path | None, trusted: list[str], **more: Any
) -> Settings:
    overrides: dict[str, Any] = {
        "keys_dir": str(rsa_keys_dir),
        "htpasswd": None,
        "realm": "http://auth.test/token",
        "trusted_proxies": trusted,
        **more,
    }
    if acl is not None:
        overrides["acl"] = str(acl)
    return load_settings(overrides=overrides)


def granted(settings: Settings, peer: str, headers: dict[str, str], scope: str) -> list[str]:
    """Ask the app for a token as if from `peer`; the actions granted on the one scope."""
    app = create_app(settings)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as client:
            params = {"service": settings.service, "scope": scope}
            return await client.get("/token", params=params, headers=headers)

    response = anyio.run(call)
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    (entry,) = claims["access"]
    return list(entry["actions"])


SCOPE = "repository:team/app:pull,push"


def test_direct_client_in_the_network(rsa_keys_dir: Path, acl_file: Path) -> None:
    settings = make_settings(rsa_keys_dir, acl_file, [])
    assert granted(settings, "10.1.2.3", {}, SCOPE) == ["pull", "push"]


def test_forged_forwarded_for_from_an_untrusted_peer_is_ignored(
    rsa_keys_dir: Path, acl_file: Path
) -> None:
    settings = make_settings(rsa_keys_dir, acl_file, ["127.0.0.1/32"])
    forged = {"X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.1.2.3"}
    assert granted(settings, "203.0.113.5", forged, SCOPE) == []


def test_forwarded_for_from_a_trusted_proxy_is_used(rsa_keys_dir: Path, acl_file: Path) -> None:
    settings = make_settings(rsa_keys_dir, acl_file, ["127.0.0.1/32"])
    headers = {"X-Forwarded-For": "10.1.2.3"}
    assert granted(settings, "127.0.0.1", headers, SCOPE) == ["pull", "push"]


def test_client_written_hops_left_of_the_proxy_are_ignored(
    rsa_keys_dir: Path, acl_file: Path
) -> None:
    settings = make_settings(rsa_keys_dir, acl_file, ["127.0.0.1/32"])
    headers = {"X-Forwarded-For": "10.1.2.3, 203.0.113.5"}
    assert granted(settings, "127.0.0.1", headers, SCOPE) == []


def test_real_ip_from_a_trusted_proxy_that_writes_it(rsa_keys_dir: Path, acl_file: Path) -> None:
    settings = make_settings(rsa_keys_dir, acl_file, ["::1/128"], client_ip_header="x-real-ip")
    assert granted(settings, "::1", {"X-Real-IP": "10.9.9.9"}, SCOPE) == ["pull", "push"]


def test_a_client_cannot_pick_its_address_through_the_header_the_proxy_passes_on(
    rsa_keys_dir: Path, acl_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # nginx with only `proxy_set_header X-Real-IP $remote_addr`: the client's own
    # X-Forwarded-For reaches the service untouched. It named the client (an `ip` rule's push,
    # a fresh brute-force counter per guess) when it was read first, X-Real-IP only without it.
    real_ip = make_settings(rsa_keys_dir, acl_file, ["127.0.0.1/32"], client_ip_header="x-real-ip")
    forged = {"X-Real-IP": "203.0.113.5", "X-Forwarded-For": "10.1.1.1"}
    assert granted(real_ip, "127.0.0.1", forged, SCOPE) == []
    # And the other way round: with the default header, X-Real-IP is not read. Nor is the
    # proxy (inside the `ip` rule's network here, as proxies often are) taken for the client:
    # a config from before client_ip_header, behind a proxy writing only X-Real-IP, would
    # have given every outside client the inside rule. Unknown; the log names the setting.
    inside = make_settings(rsa_keys_dir, acl_file, ["10.0.0.0/8"])
    with caplog.at_level(logging.WARNING, logger="app.api.client_ip"):
        assert granted(inside, "10.0.0.7", {"X-Real-IP": "203.0.113.5"}, SCOPE) == []
    assert "set client_ip_header: x-real-ip" in caplog.text


def test_proxy_without_trust_config_is_just_a_peer(rsa_keys_dir: Path, acl_file: Path) -> None:
    settings = make_settings(rsa_keys_dir, acl_file, [])
    assert granted(settings, "127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}, SCOPE) == []


def test_without_acl_the_default_authorizer_stays(rsa_keys_dir: Path) -> None:
    settings = make_settings(rsa_keys_dir, None, [])
    # The built-in default gives anonymous requests nothing, whatever the address.
    assert granted(settings, "10.1.2.3", {}, SCOPE) == []
    assert granted(settings, "10.1.2.3", {}, "repository:public/x:pull") == []


def test_acl_relative_to_the_config_file(rsa_keys_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "acl.yaml").write_text(POLICY, encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"issuer: i\nservice: s\nrealm: http://a.test/token\nkeys_dir: {rsa_keys_dir}\n"
        "acl: policies/acl.yaml\n",
        encoding="utf-8",
    )
    assert load_settings(config).acl == tmp_path / "policies" / "acl.yaml"


def test_invalid_acl_refuses_to_start(rsa_keys_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "acl.yaml"
    bad.write_text("rules:\n  - match: {ip: nonsense}\n    allow: [pull]\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"acl.yaml: rules\[0\]\.match\.ip"):
        TokenService.from_settings(make_settings(rsa_keys_dir, bad, []))


def test_missing_acl_refuses_to_start(rsa_keys_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the ACL file"):
        TokenService.from_settings(make_settings(rsa_keys_dir, tmp_path / "nope.yaml", []))
