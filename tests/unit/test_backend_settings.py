"""auth_backends config: bad entries fail with one line naming the key; paths resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.assembly import authz_webhook_from_settings
from app.authn.build import build_authentication, configured_backends, read_secret
from app.backend_settings import HtpasswdBackend, LdapBackend
from app.errors import ConfigError
from app.settings import load_settings
from tests.vectors.load import load

CASES = load("backend_configs.yaml")
BASE: dict[str, Any] = {"htpasswd": None, "realm": "http://auth.test/token"}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_backend_config_names_the_key(case: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={**BASE, "auth_backends": [case["backend"]]})
    message = str(caught.value)
    assert message.startswith(f"config: {case['key']}"), message
    assert case["words"] in message
    assert "\n" not in message
    assert "hunter2" not in message
    assert "s3cret" not in message


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "registry-auth.yaml"
    config.parent.mkdir()
    backends = [
        {"type": "static", "path": "users.yaml"},
        {"type": "ldap", "url": "ldaps://ldap", "user_base": "dc=x", "ca_file": "ca.pem"},
        {"type": "robots"},
    ]
    config.write_text(
        yaml.safe_dump({**BASE, "issuer": "i", "service": "s", "auth_backends": backends})
    )
    settings = load_settings(config)
    assert settings.auth_backends is not None
    static, ldap, robots = settings.auth_backends
    assert static.path == config.parent / "users.yaml"  # type: ignore[union-attr]
    assert isinstance(ldap, LdapBackend)
    assert ldap.ca_file == config.parent / "ca.pem"
    assert robots.path == config.parent / "robots.yaml"  # type: ignore[union-attr]


def test_without_auth_backends_htpasswd_is_a_one_backend_chain(tmp_path: Path) -> None:
    settings = load_settings(overrides={**BASE, "htpasswd": str(tmp_path / "u.htpasswd")})
    assert configured_backends(settings) == [
        HtpasswdBackend(type="htpasswd", path=tmp_path / "u.htpasswd")
    ]


def test_htpasswd_key_and_auth_backends_together_is_refused(tmp_path: Path) -> None:
    """By the settings: `registry-config`, `acl check` and `healthcheck` took such a config."""
    with pytest.raises(ConfigError, match=r"^config: htpasswd: with auth_backends"):
        load_settings(
            overrides={
                **BASE,
                "htpasswd": str(tmp_path / "u.htpasswd"),
                "auth_backends": [{"type": "robots", "path": str(tmp_path / "r.yaml")}],
            }
        )


def test_duplicate_names_and_two_robot_stores_are_refused() -> None:
    two = [{"type": "static", "path": "a"}, {"type": "static", "path": "b"}]
    with pytest.raises(ConfigError, match="give each a distinct `name`"):
        load_settings(overrides={**BASE, "auth_backends": two})
    robots = [{"type": "robots", "path": "a"}, {"type": "robots", "name": "r2", "path": "b"}]
    with pytest.raises(ConfigError, match="at most one backend of type robots"):
        load_settings(overrides={**BASE, "auth_backends": robots})


def test_missing_or_empty_secret_file_or_env_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty one too: every LDAP bind failed (503 naming no setting), and a webhook was sent
    an empty secret (403 from the bridge: every login 401, counted against the user)."""
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    monkeypatch.setenv("EMPTY_VAR", "")
    (tmp_path / "empty").write_text("\n")
    for source in (
        {"bind_password_file": str(tmp_path / "nope")},
        {"bind_password_env": "NO_SUCH_VAR"},
        {"bind_password_file": str(tmp_path / "empty")},
        {"bind_password_env": "EMPTY_VAR"},
    ):
        ldap = {"type": "ldap", "url": "ldap://x", "user_base": "dc=x", "bind_dn": "cn=a", **source}
        settings = load_settings(overrides={**BASE, "auth_backends": [ldap]})
        with pytest.raises(
            ConfigError, match=r"^config: auth_backends\.0\.bind_password_(file|env): "
        ):
            build_authentication(settings)


@pytest.mark.parametrize(
    "secret",
    ["a\nb", "li\rne", "tab\there", " padded", "padded ", "caf\u00e9", "bell\x07"],
)
def test_a_webhook_secret_no_header_can_carry_is_refused_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    """It started, then every call failed in the HTTP client: every login a 503 (and the
    breaker open), every authorization a 503."""
    (tmp_path / "secret").write_text(secret + "\n")
    monkeypatch.setenv("HOOK_SECRET", secret)
    for source, key in (
        ({"secret_file": str(tmp_path / "secret")}, "secret_file"),
        ({"secret_env": "HOOK_SECRET"}, "secret_env"),
    ):
        hook = {"type": "webhook", "url": "https://bridge.test/check", **source}
        settings = load_settings(overrides={**BASE, "auth_backends": [hook]})
        with pytest.raises(ConfigError) as caught:
            build_authentication(settings)
        assert caught.value.key == f"auth_backends.0.{key}"
        assert "only printable ASCII" in caught.value.problem
        assert secret.strip() not in str(caught.value)
        authz = {"url": "https://bridge.test/authz", **source}
        settings = load_settings(overrides={**BASE, "authz_webhook": authz})
        with pytest.raises(ConfigError, match=rf"^config: authz_webhook\.{key}: "):
            authz_webhook_from_settings(settings)


def test_a_header_safe_webhook_secret_is_taken(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cr3t with spaces~!\n")
    secret = read_secret(tmp_path / "secret", None, "secret", header=True)
    assert secret is not None
    assert secret.get_secret_value() == "s3cr3t with spaces~!"


@pytest.mark.parametrize(
    ("backend", "key", "words"),
    [
        ({"type": "static", "path": ""}, "auth_backends.0.static.path", "is empty: give a path"),
        ({"type": "robots", "path": " "}, "auth_backends.0.robots.path", "is empty"),
        (
            {"type": "webhook", "url": "https://sso", "secret_file": ""},
            "auth_backends.0.webhook.secret_file",
            "is empty: give a path, or null",
        ),
        (
            {"type": "ldap", "url": "ldap://x", "user_base": "dc=x", "ca_file": ""},
            "auth_backends.0.ldap.ca_file",
            "is empty",
        ),
    ],
)
def test_an_empty_backend_path_is_refused_naming_the_key(
    backend: dict[str, Any], key: str, words: str
) -> None:
    """Not read as the config's folder ("cannot read .: Is a directory" later)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={**BASE, "auth_backends": [backend]})
    assert str(caught.value).startswith(f"config: {key}: ")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("backend", "key"),
    [
        ({"type": "webhook", "url": "https://sso:99999/check"}, "auth_backends.0.webhook.url"),
        ({"type": "webhook", "url": "http://sso:abc/check"}, "auth_backends.0.webhook.url"),
        (
            {"type": "ldap", "url": "ldap://dc:70000", "user_base": "dc=x"},
            "auth_backends.0.ldap.url",
        ),
    ],
)
def test_a_backend_url_with_a_port_out_of_range_is_refused(
    backend: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={**BASE, "auth_backends": [backend]})
    assert str(caught.value).startswith(f"config: {key}: ")
    assert "port is not a number in 1-65535" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "attribute"),
    [
        ({}, "uid"),
        ({"user_filter": "(&(objectClass=user)(sAMAccountName={account}))"}, "sAMAccountName"),
        ({"mode": "direct", "user_dn_template": "cn={account},ou=p,dc=x"}, "cn"),
        ({"user_filter": "(uid={account})", "account_attribute": "mail"}, "mail"),
    ],
)
def test_the_ldap_account_attribute_is_the_one_the_account_is_matched_against(
    options: dict[str, Any], attribute: str
) -> None:
    ldap = LdapBackend.model_validate(
        {"type": "ldap", "url": "ldap://x", "user_base": "dc=x", **options}
    )
    assert ldap.name_attribute() == attribute


def test_an_ldap_filter_that_names_no_account_attribute_asks_for_one() -> None:
    backend = {"type": "ldap", "url": "ldap://x", "user_base": "dc=x", "user_filter": "{account}"}
    with pytest.raises(ConfigError, match="set `account_attribute`"):
        load_settings(overrides={**BASE, "auth_backends": [backend]})


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (
            {"user_filter": "(uid={account}"},
            "`user_filter` is not an LDAP filter: '(uid={account}'",
        ),
        ({"user_filter": "uid={account}"}, "`user_filter` is not an LDAP filter"),
        (
            {"groups_from": "search", "group_base": "dc=x", "group_filter": "member={dn}"},
            "`group_filter` is not an LDAP filter",
        ),
        ({"user_base": "people"}, "`user_base` is not an LDAP DN: 'people'"),
        (
            {"mode": "direct", "user_dn_template": "uid={account}ou=people"},
            "`user_dn_template` is not an LDAP DN",
        ),
    ],
)
def test_an_ldap_filter_or_dn_that_ldap_cannot_parse_stops_the_start(
    change: dict[str, str], refusal: str
) -> None:
    """It started, said it was ready, and answered every LDAP login 503 (`invalid filter`)."""
    backend = {"type": "ldap", "url": "ldap://x", "user_base": "ou=people,dc=x"} | change
    with pytest.raises(
        ConfigError, match=rf"^config: auth_backends\.0\.ldap: {re.escape(refusal)}"
    ):
        load_settings(overrides={**BASE, "auth_backends": [backend]})
    good = backend | {
        # Bound with as written: AD takes a user principal name or a down-level name there.
        "bind_dn": "svc-registry@corp.example.com",
        "bind_password_env": "LDAP_PW",
        "user_filter": "(&(objectClass=person)(uid={account}))",
        "group_filter": "(|(member={dn})(memberUid={account}))",
        "user_base": "",  # the root: a search from the top
        "user_dn_template": "uid={account},ou=people,dc=x",
    }
    assert load_settings(overrides={**BASE, "auth_backends": [good]}).auth_backends


@pytest.mark.parametrize(
    ("hook", "key", "words"),
    [
        ({"url": "https://p", "secret": "s3cret"}, "authz_webhook", "secret_file"),
        ({"url": "ftp://p"}, "authz_webhook.url", "http:// or https://"),
        ({"url": "https://p", "cache_ttl": 3600}, "authz_webhook.cache_ttl", "600"),
        ({"url": "https://p", "client_cert": "c.pem"}, "authz_webhook", "client_key"),
    ],
)
def test_a_bad_authz_webhook_names_the_key(hook: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={**BASE, "authz_webhook": hook})
    message = str(caught.value)
    assert message.startswith(f"config: {key}"), message
    assert words in message
    assert "s3cret" not in message


def test_authz_webhook_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "registry-auth.yaml"
    hook = {"url": "https://p", "secret_file": "projects.secret", "ca_file": "ca.pem"}
    config.write_text(
        yaml.safe_dump({**BASE, "issuer": "i", "service": "s", "authz_webhook": hook})
    )
    settings = load_settings(config)
    assert settings.authz_webhook is not None
    assert settings.authz_webhook.secret_file == tmp_path / "projects.secret"
    assert settings.authz_webhook.ca_file == tmp_path / "ca.pem"


def test_a_ca_file_that_cannot_be_read_names_its_key(tmp_path: Path) -> None:
    """Was `registry-auth: error: No such file or directory`, naming nothing."""
    missing = str(tmp_path / "nope.pem")
    hook = {"type": "webhook", "url": "https://sso", "ca_file": missing}
    settings = load_settings(overrides={**BASE, "auth_backends": [hook]})
    with pytest.raises(ConfigError, match=r"^config: auth_backends\.0\.ca_file: .*nope\.pem: No"):
        build_authentication(settings)
    issuer = {"type": "jwt", "issuer": "https://ci", "audience": "r", "claims": {"a": "b"}}
    settings = load_settings(overrides={**BASE, "auth_backends": [{**issuer, "ca_file": missing}]})
    with pytest.raises(ConfigError, match=r"^config: auth_backends\.0\.ca_file: "):
        build_authentication(settings)
    ldap = {"type": "ldap", "url": "ldaps://dc", "user_base": "dc=x", "ca_file": missing}
    settings = load_settings(overrides={**BASE, "auth_backends": [ldap]})
    with pytest.raises(ConfigError, match=r"^config: auth_backends\.0\.ca_file: "):
        build_authentication(settings)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    junk = {"url": "https://p", "ca_file": str(tmp_path / "junk.pem")}
    settings = load_settings(overrides={**BASE, "authz_webhook": junk})
    with pytest.raises(ConfigError, match=r"^config: authz_webhook\.ca_file: .*junk\.pem: "):
        authz_webhook_from_settings(settings)
