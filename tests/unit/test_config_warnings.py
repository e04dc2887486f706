"""Start-up warnings for risky settings: secrets sent unencrypted, a token_ttl under a minute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.cli import run
from app.config_warnings import config_warnings
from app.settings import load_settings
from tests.unit.test_cli import CONFIG, Recorder

BASE: dict[str, Any] = {"htpasswd": "users.htpasswd", "realm": "https://auth.test/token"}


def _warnings(**overrides: Any) -> list[str]:
    if "auth_backends" in overrides:  # never both (refused)
        overrides = {"htpasswd": None, **overrides}
    return config_warnings(load_settings(overrides={**BASE, **overrides}))


def _ldap(url: str, **options: Any) -> dict[str, Any]:
    return {"type": "ldap", "url": url, "user_base": "dc=x", **options}


def _webhook(url: str) -> dict[str, Any]:
    return {"type": "webhook", "url": url}


@pytest.mark.parametrize(
    ("backend", "words"),
    [
        (_ldap("ldap://dc.corp"), "auth_backends[0] (ldap): ldap://dc.corp without start_tls"),
        (_ldap("ldap://10.0.0.5:389"), "ldaps:// or `start_tls: true`"),
        (_webhook("http://sso.corp/check"), "auth_backends[0] (webhook): http://sso.corp/check"),
        (_webhook("http://[2001:db8::1]:8080/check"), "use https://"),
    ],
)
def test_an_unencrypted_backend_on_another_machine_is_named(
    backend: dict[str, Any], words: str
) -> None:
    (warning,) = _warnings(auth_backends=[backend])
    assert words in warning
    assert "passwords" in warning


@pytest.mark.parametrize(
    "backend",
    [
        _ldap("ldaps://dc.corp"),
        _ldap("ldap://dc.corp", start_tls=True),
        _ldap("ldap://127.0.0.1:3389"),
        _ldap("ldap://localhost"),
        _webhook("https://sso.corp/check"),
        _webhook("http://[::1]:8080/check"),
        _webhook("http://127.0.0.2/check"),
        _webhook("http://bridge.localhost/check"),
    ],
)
def test_encrypted_or_loopback_backends_are_not_warned_about(backend: dict[str, Any]) -> None:
    assert _warnings(auth_backends=[backend]) == []


def test_the_etcd_state_store_in_the_clear_is_named_per_endpoint() -> None:
    endpoints = ["http://etcd-0.corp:2379", "http://127.0.0.1:2379"]
    state = {"backend": "etcd", "etcd_endpoints": endpoints}
    (warning,) = _warnings(state=state)
    assert warning.startswith("state.etcd_endpoints: http://etcd-0.corp:2379 is plain HTTP")
    https = {"backend": "etcd", "etcd_endpoints": ["https://etcd-0.corp:2379"]}
    assert _warnings(state=https) == []
    # The same endpoints mean nothing while the state is the SQLite file.
    assert _warnings(state={"backend": "sqlite", "etcd_endpoints": endpoints}) == []


def test_publishing_is_warned_about_only_with_a_password() -> None:
    publish = {"endpoints": ["http://etcd.corp:4001"]}
    assert _warnings(etcd=publish) == []  # realm, issuer, service: public anyway
    with_password = {**publish, "username": "lain", "password": "hunter2"}
    (warning,) = _warnings(etcd=with_password)
    assert warning == "etcd.endpoints: http://etcd.corp:4001 sends the etcd password unencrypted"


def test_serve_prints_them_as_warnings_and_still_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_TOKEN_TTLX", "5")
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG.replace("htpasswd: users.htpasswd\n", "")
        + "auth_backends:\n  - {type: webhook, url: 'http://sso.corp/check'}\n"
    )
    recorder = Recorder()
    assert run(["serve", "--config", str(config)], serve=recorder) == 0
    assert len(recorder.calls) == 1
    err = capsys.readouterr().err
    assert err.startswith("registry-auth: warning: auth_backends[0] (webhook): http://sso.corp")
    assert "\nregistry-auth: warning: REGISTRY_AUTH_TOKEN_TTLX names no setting" in err
    warnings, block = err.split("# Paste into the registry's config.yml:\n")
    # one line each, then what decides the grants, then the registry block
    assert warnings.count("\n") == 3
    assert warnings.endswith(
        "\nregistry-auth: access control: the built-in default (every logged-in account may "
        "pull and push every repository; set `acl` to narrow it)\n"
    )
    assert block.startswith("auth:\n")


def test_a_token_ttl_under_a_minute_is_warned_about() -> None:
    (warning,) = _warnings(token_ttl=30)
    assert warning.startswith("token_ttl: 30 s is under a minute")
    assert _warnings(token_ttl=60) == []


@pytest.mark.parametrize(
    ("realm", "warned"),
    [
        ("http://auth.corp:5001/token", True),
        ("https://auth.corp/token", False),
        ("http://127.0.0.1:5001/token", False),
        ("http://[::ffff:127.0.0.1]:5001/token", False),
        ("http://localhost:5001/token", False),
    ],
)
def test_a_plain_http_realm_on_another_machine_is_warned_about(realm: str, warned: bool) -> None:
    found = _warnings(realm=realm)
    assert bool(found) is warned
    if warned:
        assert found[0].startswith(f"realm: {realm} is plain HTTP: clients send their passwords")


def test_a_plain_http_authz_webhook_elsewhere_is_named() -> None:
    (warning,) = _warnings(authz_webhook={"url": "http://projects.corp/authorize"})
    assert warning.startswith("authz_webhook: http://projects.corp/authorize is plain HTTP")
    assert _warnings(authz_webhook={"url": "http://127.0.0.1:8080/authorize"}) == []
    assert _warnings(authz_webhook={"url": "https://projects.corp/authorize"}) == []


def test_a_wide_shared_network_is_named() -> None:
    (warning,) = _warnings(brute_force={"shared_networks": ["10.0.0.0/8", "10.20.30.0/24"]})
    assert warning.startswith("brute_force.shared_networks: 10.0.0.0/8 is wide")
    assert _warnings(brute_force={"shared_networks": ["2001:db8:1::/48"]}) == []
    assert len(_warnings(brute_force={"shared_networks": ["::/0"]})) == 1


def test_a_variable_that_names_no_setting_is_named() -> None:
    """A typo in the file is refused (unknown setting); in a variable it passed unseen."""
    backend = {
        **_ldap("ldaps://dc.corp"),
        "bind_dn": "cn=x",
        "bind_password_env": "REGISTRY_AUTH_LDAP_PW",
    }
    settings = load_settings(overrides={**BASE, "htpasswd": None, "auth_backends": [backend]})
    environ = {
        "REGISTRY_AUTH_TOKEN_TTLX": "5",  # the typo
        "REGISTRY_AUTH_STATE__PATHS": "x.db",  # a typo under a section
        "REGISTRY_AUTH_TOKEN_TTL": "5",
        "registry_auth_issuer": "i",  # names are not case-sensitive
        "REGISTRY_AUTH_STATE__ETCD_PASSWORD": "pw",
        "REGISTRY_AUTH_ETCD__ENDPOINTS": "[]",
        "REGISTRY_AUTH_AUTH_BACKENDS": "[]",
        "REGISTRY_AUTH_LDAP_PW": "secret",  # the config names it: the backend's secret
        "REGISTRY_AUTH_CONFIG": "c.yaml",
        "REGISTRY_AUTH_FILE": "auth.json",  # skopeo's and podman's
        "REGISTRY_AUTH_TOKEN_REALM": "https://auth/token",  # the registry's own, beside it
        "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": "/etc/registry/bundle.pem",
        "REGISTRY_AUTH_HTPASSWD_PATH": "/etc/registry/htpasswd",
        # kubelet's service links for a Service named registry-auth, in every pod beside it
        "REGISTRY_AUTH_SERVICE_HOST": "10.96.0.12",
        "REGISTRY_AUTH_SERVICE_PORT": "80",
        "REGISTRY_AUTH_SERVICE_PORT_HTTP": "80",
        "REGISTRY_AUTH_PORT": "tcp://10.96.0.12:80",
        "REGISTRY_AUTH_PORT_80_TCP": "tcp://10.96.0.12:80",
        "REGISTRY_AUTH_PORT_80_TCP_ADDR": "10.96.0.12",
        "REGISTRY_AUTH_PORT_80_TCP_PORT": "80",
        "REGISTRY_AUTH_PORT_80_TCP_PROTO": "tcp",
        "REGISTRY_AUTH_SERVICE_TYPO": "x",  # not one of kubelet's: still a typo of `service`
        "PATH": "/usr/bin",
    }
    found = [w for w in config_warnings(settings, environ) if "names no setting" in w]
    assert found == [
        "REGISTRY_AUTH_SERVICE_TYPO names no setting and is ignored (the README's "
        "configuration reference lists the variables)",
        "REGISTRY_AUTH_STATE__PATHS names no setting and is ignored (the README's "
        "configuration reference lists the variables)",
        "REGISTRY_AUTH_TOKEN_TTLX names no setting and is ignored (the README's "
        "configuration reference lists the variables)",
    ]


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        ({"htpasswd": None}, True),
        ({"htpasswd": None, "auth_backends": []}, True),
        ({"htpasswd": None, "auth_backends": [{"type": "robots", "path": "r.yaml"}]}, False),
        ({}, False),
    ],
)
def test_no_authentication_at_all_is_warned_about(overrides: dict[str, Any], warned: bool) -> None:
    """Every login then failed, silently: nothing at the start said why."""
    found = [
        w
        for w in config_warnings(load_settings(overrides={**BASE, **overrides}))
        if w.startswith("no authentication:")
    ]
    assert bool(found) is warned


def test_the_start_says_what_decides_the_grants(tmp_path: Path) -> None:
    from app.cli_server import access_control  # noqa: PLC0415 - this test's subject

    hook = {"url": "https://authz.corp/check", "name": "opa"}
    assert access_control(load_settings(overrides={**BASE, "acl": str(tmp_path / "acl.yaml")})) == (
        f"the ACL {tmp_path / 'acl.yaml'}"
    )
    assert access_control(load_settings(overrides={**BASE, "authz_webhook": hook})).endswith(
        "set `acl` to narrow it), narrowed by the authorization webhook 'opa'"
    )
