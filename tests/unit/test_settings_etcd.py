"""The `etcd` section: defaults, one-line errors naming the key, secrets kept out of reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError
from app.settings import load_settings

BASE = {"issuer": "i", "service": "s", "realm": "http://auth.test/token", "htpasswd": None}


def test_without_etcd_there_is_no_section() -> None:
    assert load_settings(overrides=BASE).etcd is None


def test_defaults_are_lains_key_on_v2_and_the_key_is_left_on_shutdown() -> None:
    etcd = load_settings(overrides={**BASE, "etcd": {}}).etcd
    assert etcd is not None
    assert etcd.key == "/lain/config/auth/registry"
    assert etcd.api == "v2"
    assert etcd.endpoints == ["http://127.0.0.1:2379"]
    assert etcd.delete_on_shutdown is False


@pytest.mark.parametrize(
    ("etcd", "words"),
    [
        ({"endpoints": ["127.0.0.1:2379"]}, "etcd.endpoints"),
        ({"endpoints": ["http://a:1", "https://b:2"]}, "same scheme"),
        ({"api": "v4"}, "etcd.api"),
        ({"username": "root"}, "username and password go together"),
        ({"client_cert": "c.pem"}, "client_cert and client_key"),
        ({"retry_initial": 10, "retry_max": 1}, "retry_max"),
        ({"key": "no-slash"}, "etcd.key"),
        ({"intervall": 3}, "etcd.intervall: unknown setting"),
        (
            {"endpoints": ["http://e:0"]},
            "etcd.endpoints: the URL's port is not a number in 1-65535",
        ),
        ({"client_cert": "", "client_key": "k.pem"}, "etcd.client_cert: is empty"),
    ],
)
def test_bad_etcd_config_is_one_line_naming_the_key(etcd: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={**BASE, "etcd": etcd})
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_password_never_in_repr() -> None:
    etcd = load_settings(overrides={**BASE, "etcd": {"username": "u", "password": "hunter2"}}).etcd
    assert "hunter2" not in repr(etcd)


def test_tls_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "issuer: i\nservice: s\nrealm: http://a/token\n"
        "etcd:\n  endpoints: ['https://e:2379']\n  ca_cert: ca.pem\n",
        encoding="utf-8",
    )
    etcd = load_settings(config).etcd
    assert etcd is not None
    assert etcd.ca_cert == tmp_path / "ca.pem"


# --- the `state` section's connection to etcd: the same options as `etcd` ---


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ({"etcd_username": "root"}, "etcd_username and etcd_password go together"),
        ({"etcd_password": "pw"}, "etcd_username and etcd_password go together"),
        ({"etcd_client_key": "k.pem"}, "etcd_client_cert and etcd_client_key go together"),
        ({"etcd_username": ""}, "state.etcd_username"),
        ({"etcd_endpoints": ["http://e:99999"]}, "the URL's port is not a number in 1-65535"),
        ({"etcd_ca_cert": ""}, "state.etcd_ca_cert: is empty"),
    ],
)
def test_bad_state_etcd_connection_is_one_line(state: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={**BASE, "state": {"backend": "etcd", **state}})
    assert str(caught.value).startswith("config: state")
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_state_etcd_password_never_in_repr() -> None:
    state = {"backend": "etcd", "etcd_username": "u", "etcd_password": "hunter2"}
    settings = load_settings(overrides={**BASE, "state": state})
    assert settings.state.etcd_password is not None
    assert settings.state.etcd_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.state)


def test_state_tls_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "issuer: i\nservice: s\nrealm: http://a/token\n"
        "state:\n  backend: etcd\n  etcd_endpoints: ['https://e:2379']\n  etcd_ca_cert: ca.pem\n"
        "  etcd_client_cert: /abs/client.pem\n  etcd_client_key: tls/client.key\n",
        encoding="utf-8",
    )
    state = load_settings(config).state
    assert state.etcd_ca_cert == tmp_path / "ca.pem"
    assert state.etcd_client_cert == Path("/abs/client.pem")
    assert state.etcd_client_key == tmp_path / "tls" / "client.key"
    assert state.path == tmp_path / "registry-auth.db"  # resolved as before


@pytest.mark.parametrize("key", ["//lain//config/auth/registry", "/lain/config/", "/"])
def test_an_etcd_key_with_an_empty_part_is_refused(key: str) -> None:
    """etcd v2 answers `//a//b` with a redirect, which the service then reported as
    "not an etcd v2 API"."""
    with pytest.raises(ConfigError, match=r"etcd\.key"):
        load_settings(overrides={**BASE, "etcd": {"key": key}})


@pytest.mark.parametrize(
    ("section", "key", "use"),
    [
        ("etcd", "endpoints", "use username and password"),
        ("state", "etcd_endpoints", "use etcd_username and etcd_password"),
    ],
)
def test_a_password_in_an_endpoint_url_is_refused_without_printing_it(
    section: str, key: str, use: str
) -> None:
    """A URL is printed in logs, in `/readyz` (anyone may ask) and by the CLI: a password in
    it would be printed with it."""
    # A password with `/`, `?` or `#` ends the URL's host part early: `@` is then in its path.
    for secret in ("Hunter2", "pa/ss", "pa?ss", "pa#ss", "2379/s3cret"):
        endpoint = f"http://root:{secret}@10.0.0.2:2379"
        values: dict[str, object] = {key: ["http://10.0.0.1:2379", endpoint]}
        if section == "state":
            values["backend"] = "etcd"
        with pytest.raises(ConfigError) as caught:
            load_settings(overrides={**BASE, section: values})
        assert str(caught.value) == (
            f"config: {section}.{key}: an endpoint must not hold a user or password "
            f"(user@host): {use}"
        )


@pytest.mark.parametrize(
    "endpoint",
    ["http://etcd:2379/v2/keys?token=S3cret", "http://etcd:99999/x?key=S3cret", "etcd:2379?S3cret"],
)
def test_no_endpoint_error_prints_the_endpoint(endpoint: str) -> None:
    """A path, a query, a bad port or scheme: refused, and the URL (a key in it) not printed."""
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={**BASE, "etcd": {"endpoints": [endpoint]}})
    assert str(caught.value).startswith("config: etcd.endpoints: ")
    assert "S3cret" not in str(caught.value)


def test_a_config_with_several_problems_names_each_key() -> None:
    overrides = {**BASE, "token_ttl": -1, "frobnicate": 1, "etcd": {"api": "v9"}}
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides=overrides)
    assert str(caught.value).endswith("; and 2 more problem(s): etcd.api, frobnicate")
    assert str(caught.value).startswith("config: token_ttl: Input should be greater than 0")
