from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError
from app.settings import load_settings

BASE = 'issuer: "auth server"\nservice: "registry.local"\nrealm: "http://127.0.0.1:5001/token"\n'


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_a_full_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = _config(
        tmp_path, BASE + 'listen: "0.0.0.0:8080"\ntoken_ttl: 600\nhtpasswd: u.htpasswd\n'
    )
    settings = load_settings(path)
    assert settings.issuer == "auth server"
    assert settings.token_ttl == 600
    assert settings.keys_dir == tmp_path / "keys"
    assert settings.htpasswd == tmp_path / "u.htpasswd"
    assert settings.realm_path == "/token"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_TOKEN_TTL", "900")
    monkeypatch.setenv("REGISTRY_AUTH_SERVICE", "other.local")
    settings = load_settings(_config(tmp_path, BASE))
    assert settings.token_ttl == 900
    assert settings.service == "other.local"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_CONFIG", str(_config(tmp_path, BASE + "token_ttl: 42\n")))
    assert load_settings().token_ttl == 42


def test_embedded_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    settings = load_settings()
    assert settings.listen.startswith("127.0.0.1:")
    assert settings.htpasswd is not None


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('service: "s"\nrealm: "http://x/token"\n', "issuer", "missing"),
        (BASE + "token_ttl: 0\n", "token_ttl", "greater than 0"),
        (BASE + "token_ttl: -5\n", "token_ttl", "greater than 0"),
        (BASE + "token_ttl: soon\n", "token_ttl", "integer"),
        (BASE + "tokn_ttl: 5\n", "tokn_ttl", "unknown setting"),
        # Matched in any case by the model: a second spelling of a key was silently lost.
        (BASE + "Token_TTL: 300\n", "Token_TTL", "lower case (`token_ttl`) (in "),
        # YAML reads these names as a number, a boolean, null: a TypeError's traceback.
        (BASE + "1: x\n", "1", "YAML reads this name as a number"),
        (BASE + "yes: 1\n", "True", "YAML reads this name as a boolean"),
        (BASE + "null: x\n", "None", "YAML reads this name as null"),
        # Checks across keys named "(top level)", or only met once the service was built.
        (BASE + "extra_services: [registry.local]\n", "extra_services", "`service` already"),
        (
            BASE + "htpasswd: u\nauth_backends: [{type: htpasswd, path: u}]\n",
            "htpasswd",
            "list it there as `- type: htpasswd`",
        ),
        # The refresh records' range took in the counters: 500s, `tokens list` a traceback.
        (
            BASE + "state: {backend: etcd, etcd_prefix: /registry-auth/}\n",
            "state.etcd_prefix",
            "brute_force.etcd_prefix '/registry-auth/failures/' overlap",
        ),
        (
            BASE + "state: {backend: etcd, etcd_prefix: /registry-auth/r/}\n"
            "brute_force: {etcd_prefix: /registry-auth/r/x/}\n",
            "state.etcd_prefix",
            "overlap",
        ),
        (BASE + "keys_dir: null\n", "keys_dir", "must be a path, not null"),
        # Past year 9999 the refresh-token stores' dates overflowed: every docker login a 500.
        (BASE + "refresh_token_lifetime: 1000000000000\n", "refresh_token_lifetime", "less"),
        (BASE + "refresh_token_idle_timeout: 1e20\n", "refresh_token_idle_timeout", "integer"),
        (BASE + "etcd:\n  retry_max: 1e300\n", "etcd.retry_max", "less"),
        (BASE + 'listen: "nowhere"\n', "listen", "host:port"),
        (BASE.replace("http://127.0.0.1:5001/token", "ftp://x"), "realm", "http"),
        (BASE.replace("127.0.0.1:5001", "h:99999"), "realm", "port is not a number"),
        (BASE.replace("127.0.0.1:5001", "h:abc"), "realm", "port is not a number"),
        (BASE.replace("127.0.0.1:5001", "h:0"), "realm", "port is not a number"),
        (BASE + 'htpasswd: ""\n', "htpasswd", "is empty"),
        (BASE + 'acl: " "\n', "acl", "is empty"),
        (BASE + 'keys_dir: ""\n', "keys_dir", "is empty"),
        (BASE + 'audit_log: ""\n', "audit_log", "is empty"),
        (BASE + 'state: {path: ""}\n', "state.path", "is empty"),
        (BASE + 'tls: {cert: "", key: k.pem}\n', "tls.cert", "is empty"),
        (BASE + "token_ttl: 5\ntoken_ttl: 6\n", "--config", "duplicate key 'token_ttl'"),
        (BASE + "etcd:\n  key: /a\n  key: /b\n", "--config", "line 6: duplicate key 'key'"),
        # PyYAML builds a list key and then fails hashing it: a traceback, not a line.
        (BASE + "? [token_ttl]\n: 5\n", "--config", "line 4: a list or mapping as a key"),
        ("- a\n- b\n", "--config", "mapping"),
        # pydantic read true as 1: tokens valid for a second, one worker, a 1-byte body.
        (BASE + "token_ttl: true\n", "token_ttl", "must be a number, not true or false"),
        (BASE + "workers: true\n", "workers", "must be a number, not true or false"),
        (BASE + "tls: true\n", "tls", "must be a section of settings (`key: value` under it)"),
        (BASE + "limits: {max_body_bytes: false}\n", "limits.max_body_bytes", "not true"),
        (
            BASE + "auth_backends:\n  - {type: webhook, url: 'https://h/x', timeout: true}\n",
            "auth_backends.0.timeout",
            "must be a number, not true or false",
        ),
        ("issuer: [unclosed\n", "--config", "not valid YAML at line"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, text))
    message = str(caught.value)
    assert caught.value.key == key
    assert problem in message
    assert "\n" not in message


def test_etcd_prefixes_apart_or_another_store_load(tmp_path: Path) -> None:
    apart = BASE + "state: {backend: etcd, etcd_prefix: /registry-auth/refresh/}\n"
    assert load_settings(_config(tmp_path, apart)).state.etcd_prefix == "/registry-auth/refresh/"
    # Without etcd as the store, or without counters, the counters' prefix is not used.
    off = (
        BASE
        + "state: {backend: etcd, etcd_prefix: /registry-auth/}\nbrute_force: {enabled: false}\n"
    )
    assert load_settings(_config(tmp_path, off)).state.etcd_prefix == "/registry-auth/"
    sqlite = BASE + "state: {etcd_prefix: /registry-auth/}\n"
    assert load_settings(_config(tmp_path, sqlite)).state.backend == "sqlite"


def test_a_boolean_where_one_is_meant_still_loads(tmp_path: Path) -> None:
    text = BASE + "brute_force: {enabled: false}\ntoken_reuse: false\nmetrics: false\n"
    settings = load_settings(_config(tmp_path, text))
    assert (settings.brute_force.enabled, settings.token_reuse, settings.metrics) == (
        False, False, False,
    )  # fmt: skip


def test_a_config_file_named_by_the_environment_is_blamed_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --config was given: the error named it all the same."""
    monkeypatch.setenv("REGISTRY_AUTH_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.key == "REGISTRY_AUTH_CONFIG"
    assert "cannot read" in str(caught.value)


def test_a_key_missing_from_a_section_a_variable_made_is_blamed_on_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file has no `tls`: the section came from the variable, not from the file named."""
    monkeypatch.setenv("REGISTRY_AUTH_TLS__CERT", "/etc/cert.pem")
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, BASE))
    assert caught.value.key == "tls.key"
    assert str(caught.value).endswith("missing (required) (from REGISTRY_AUTH_TLS__CERT)")


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


def test_a_duplicate_key_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, BASE + "acl: a.yaml\nacl: b.yaml\n"))
    assert str(tmp_path / "config.yaml") in str(caught.value)


def _refused_with(monkeypatch: pytest.MonkeyPatch, assignment: str, config: Path) -> ConfigError:
    """The ConfigError of loading `config` with `VARIABLE=value` in the environment."""
    variable, _, value = assignment.partition("=")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    return caught.value


@pytest.mark.parametrize(
    ("assignment", "key", "problem"),
    [
        ("REGISTRY_AUTH_TOKEN_TTL=abc", "token_ttl", "valid integer"),
        ("REGISTRY_AUTH_TOKEN_TTL=null", "token_ttl", "valid integer"),
        ("REGISTRY_AUTH_HTPASSWD=", "htpasswd", "is empty: give a path, or null"),
        ("REGISTRY_AUTH_ACL=", "acl", "is empty"),
        ("REGISTRY_AUTH_AUDIT_LOG=", "audit_log", "is empty"),
        ("REGISTRY_AUTH_STATE__BACKEND=redis", "state.backend", "'sqlite', 'etcd' or 'none'"),
        ('REGISTRY_AUTH_TLS={"cert": "c.pem"}', "tls.key", "missing"),
        ('REGISTRY_AUTH_TRUSTED_PROXIES=["nonsense"]', "trusted_proxies.0", "network"),
        # JSON's true was read as 1, as a file's was: a 1-byte body limit, a 1 s timeout.
        ('REGISTRY_AUTH_LIMITS={"max_body_bytes": true}', "limits.max_body_bytes", "not true"),
        (
            'REGISTRY_AUTH_AUTH_BACKENDS=[{"type": "webhook","url": "https://h","timeout": true}]',
            "auth_backends.0.timeout",
            "must be a number, not true or false",
        ),
        ("REGISTRY_AUTH_STATE__ETCD_TIMEOUT=true", "state.etcd_timeout", "valid number"),
    ],
)
def test_a_bad_environment_value_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, assignment: str, key: str, problem: str
) -> None:
    variable = assignment.partition("=")[0]
    config = _config(tmp_path, BASE + "htpasswd: u.htpasswd\n")
    error = _refused_with(monkeypatch, assignment, config)
    message = str(error)
    assert error.key == key
    assert problem in message
    assert message.endswith(f"(from {variable})")


def test_a_section_variable_is_blamed_only_for_the_keys_it_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path, BASE + "state:\n  etcd_timeout: -1\n")
    monkeypatch.setenv("REGISTRY_AUTH_STATE", '{"etcd_timeout": -2}')
    with pytest.raises(
        ConfigError, match=r"^config: state.etcd_timeout: .*\(from REGISTRY_AUTH_STATE\)$"
    ):
        load_settings(path)
    monkeypatch.setenv("REGISTRY_AUTH_STATE", '{"backend": "sqlite"}')
    with pytest.raises(ConfigError, match=r"^config: state.etcd_timeout: .*\(in .*config.yaml\)$"):
        load_settings(path)


def test_a_section_check_failing_over_a_variable_names_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_STATE__ETCD_USERNAME", "root")
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, BASE))
    assert str(caught.value).endswith("(from REGISTRY_AUTH_STATE__ETCD_USERNAME)")
    path = _config(tmp_path, BASE + "state:\n  etcd_client_cert: c.pem\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).endswith(f"(in {path} and from REGISTRY_AUTH_STATE__ETCD_USERNAME)")


@pytest.mark.parametrize(
    ("assignment", "key", "example"),
    [
        ("REGISTRY_AUTH_TRUSTED_PROXIES=10.0.0.0/8", "trusted_proxies", '["10.0.0.0/8"]'),
        (
            "REGISTRY_AUTH_TRUSTED_PROXIES=10.0.0.0/8, ::1/128",
            "trusted_proxies",
            '["10.0.0.0/8", "::1/128"]',
        ),
        ("REGISTRY_AUTH_STATE=notjson", "state", '{"key": "value"}'),
        ("REGISTRY_AUTH_ETCD__ENDPOINTS=http://a:1", "etcd.endpoints", '["http://a:1"]'),
        ("REGISTRY_AUTH_STATE__ETCD_ENDPOINTS=[http://a:1", "state.etcd_endpoints", '["a", "b"]'),
    ],
)
def test_a_list_or_section_that_is_not_json_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, assignment: str, key: str, example: str
) -> None:
    variable = assignment.partition("=")[0]
    error = _refused_with(monkeypatch, assignment, _config(tmp_path, BASE))
    assert error.key == key
    assert error.problem == (
        f"{variable} is not JSON (a list or section takes JSON, e.g. {example})"
    )


@pytest.mark.parametrize("variable", ["REGISTRY_AUTH_AUDIT_LOG", "REGISTRY_AUTH_HTPASSWD"])
def test_null_in_the_environment_unsets_an_optional_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "null")
    path = _config(tmp_path, BASE + "audit_log: audit.log\nhtpasswd: u.htpasswd\n")
    settings = load_settings(path)
    key = variable.removeprefix("REGISTRY_AUTH_").lower()
    assert getattr(settings, key) is None


def test_null_in_the_environment_unsets_a_section_and_a_key_inside_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path, BASE + "etcd: {ca_cert: ca.pem}\ntls: {cert: c.pem, key: k.pem}\n")
    monkeypatch.setenv("REGISTRY_AUTH_ETCD__CA_CERT", "null")
    monkeypatch.setenv("REGISTRY_AUTH_TLS", "null")
    settings = load_settings(path)
    assert settings.etcd is not None
    assert settings.etcd.ca_cert is None
    assert settings.tls is None


def test_a_config_nested_past_the_parsers_limit_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text("issuer: x\nextra: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match="is not valid YAML: nested too deeply"):
        load_settings(config)


@pytest.mark.parametrize(
    ("network", "words"),
    [
        ("2001:db8:1:2::/96", "counted by its /64"),
        ("::ffff:10.20.0.0/112", "write IPv4-mapped addresses as IPv4"),
    ],
)
def test_a_shared_network_that_could_not_be_counted_as_written_is_refused(
    network: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=r"^config: brute_force\.shared_networks") as caught:
        load_settings(overrides={"brute_force": {"shared_networks": [network]}})
    assert words in str(caught.value)
    load_settings(overrides={"brute_force": {"shared_networks": ["2001:db8:1:2::/64"]}})


def test_the_client_ip_header_is_named_in_any_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`X-Real-IP`, as nginx's documentation writes it, was refused: a header's name has no case."""
    loaded = load_settings(_config(tmp_path, BASE + "client_ip_header: X-Real-IP\n"))
    assert loaded.client_ip_header == "x-real-ip"
    monkeypatch.setenv("REGISTRY_AUTH_CLIENT_IP_HEADER", "X-Forwarded-For")
    assert load_settings(_config(tmp_path, BASE)).client_ip_header == "x-forwarded-for"
    monkeypatch.setenv("REGISTRY_AUTH_CLIENT_IP_HEADER", "Forwarded")
    with pytest.raises(ConfigError, match="client_ip_header"):
        load_settings(_config(tmp_path, BASE))
