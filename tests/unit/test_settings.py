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
        (BASE + 'listen: "nowhere"\n', "listen", "host:port"),
        (BASE.replace("http://127.0.0.1:5001/token", "ftp://x"), "realm", "http"),
        ("- a\n- b\n", "--config", "mapping"),
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


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


def test_bad_environment_value_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_TOKEN_TTL", "abc")
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, BASE))
    assert caught.value.key == "token_ttl"
