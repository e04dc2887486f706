"""The command line in-process; `serve` is a recorder, or the real one failing before uvicorn."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import yaml

from app.api.server import serve
from app.authn.htpasswd import check_password
from app.authn.static import load_static_users
from app.cli import build_parser, run
from app.keys.store import generate_key, load_keyring
from app.settings import Settings

CONFIG = """issuer: "auth server"
service: "registry.local"
realm: "http://127.0.0.1:5001/api/v1/authorize/registry/"
htpasswd: users.htpasswd
"""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Settings, str | None, int | None]] = []

    def __call__(
        self,
        settings: Settings,
        host: str | None,
        port: int | None,
        reread: Callable[[], Settings] | None = None,
    ) -> None:
        self.calls.append((settings, host, port))
        self.reread = reread


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def test_keys_generate_prints_the_kid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            ["keys", "generate", "--keys-dir", str(tmp_path), "--algorithm", "ES256"],
            serve=Recorder(),
        )
        == 0
    )
    kid = capsys.readouterr().out.strip().splitlines()[-1]
    assert load_keyring(tmp_path).active.kid == kid


def test_users_add_list_remove(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-alice\n"))
    assert (
        run(
            ["users", "add", "alice", "--config", str(config), "--password-stdin"], serve=Recorder()
        )
        == 0
    )
    assert (config.parent / "users.htpasswd").read_text().startswith("alice:$2b$10$")
    capsys.readouterr()
    assert run(["users", "list", "--config", str(config)], serve=Recorder()) == 0
    assert capsys.readouterr().out == "alice\n"
    assert run(["users", "remove", "alice", "--config", str(config)], serve=Recorder()) == 0
    assert (config.parent / "users.htpasswd").read_text() == ""


def test_users_add_without_a_terminal_asks_for_password_stdin(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run(["users", "add", "alice", "--config", str(config)], serve=Recorder()) == 2
    assert "--password-stdin" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_users_hash_prints_a_hash_a_static_users_file_accepts(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw ålice\n"))
    assert run(["users", "hash", "--password-stdin"], serve=Recorder()) == 0
    out, err = capsys.readouterr()
    assert "pw ålice" not in out + err
    (hashed,) = out.splitlines()
    assert bcrypt.checkpw("pw ålice".encode(), hashed.encode())
    users_file = config.parent / "users.yaml"
    users_file.write_text(f'users:\n  alice:\n    password: "{hashed}"\n    groups: [ci]\n')
    assert check_password("pw ålice", load_static_users(users_file).users["alice"].hashed)
    # The cost `users add` uses.
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    run(["users", "add", "bob", "--config", str(config), "--password-stdin"], serve=Recorder())
    added = (config.parent / "users.htpasswd").read_text().split(":", 1)[1]
    assert hashed[:7] == added[:7] == "$2b$10$"


@pytest.mark.parametrize(
    ("stdin", "refusal"),
    [
        ("one\r\n", ""),
        ("one", ""),
        ("one\ntwo\n", "stdin holds more than one line"),
        ("one\n\n", "stdin holds more than one line"),
        ("y\n" * 100_000, "longer than 4096 characters"),  # `yes | ...`: read up to a bound
    ],
)
def test_password_stdin_is_one_line_or_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: str, refusal: str
) -> None:
    """All of stdin, as docker reads it: a second line was dropped without a word, and the
    password stored was not the one meant."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = 2 if refusal else 0
    assert run(["users", "hash", "--password-stdin"], serve=Recorder()) == code
    out, err = capsys.readouterr()
    if code:
        assert refusal in err
        assert out == ""
    else:
        assert bcrypt.checkpw(b"one", out.strip().encode())


@pytest.mark.parametrize(("again", "code"), [("s3cret", 0), ("s3cre7", 2)])
def test_users_hash_asks_twice_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], again: str, code: int
) -> None:
    answers = iter(["s3cret", again])
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda _prompt: next(answers))
    assert run(["users", "hash"], serve=Recorder()) == code
    out, err = capsys.readouterr()
    if code:
        assert (out, err) == (
            "",
            "registry-auth: error: the two passwords differ; nothing changed\n",
        )
    else:
        assert bcrypt.checkpw(b"s3cret", out.strip().encode())
    assert next(answers, None) is None  # asked twice


@pytest.mark.parametrize("command", [["users", "hash"], ["users", "add", "carol"]])
def test_ctrl_d_at_the_password_prompt_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: list[str],
) -> None:
    def ctrl_d(_prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", ctrl_d)
    users = tmp_path / "users.htpasswd"
    extra = ["--htpasswd", str(users)] if command[1] == "add" else []
    assert run([*command, *extra], serve=Recorder()) == 2
    err = capsys.readouterr().err
    assert err.endswith("registry-auth: error: no password given; nothing changed\n"), err
    assert "Traceback" not in err
    assert not users.exists()


def test_registry_config_block(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["registry-config", "--config", str(config)], serve=Recorder()) == 0
    out = capsys.readouterr().out
    assert 'realm: "http://127.0.0.1:5001/api/v1/authorize/registry/"' in out
    assert 'issuer: "auth server"' in out
    assert f'rootcertbundle: "{config.parent / "keys" / "bundle.pem"}"' in out


def test_registry_config_block_quotes_what_yaml_would_read_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`"corp\\auth"` was printed between plain quotes: YAML read `\\a` as a bell, and the
    registry refused every token as from an unknown issuer; a `"` made the block invalid."""
    issuer, service = 'corp\\auth "team" \U0001f600', "registry:5000 caf\u00e9 \u2028\x7f"
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"issuer": issuer, "service": service, "realm": "http://a.test/token"})
    )
    assert run(["registry-config", "--config", str(path)], serve=Recorder()) == 0
    out = capsys.readouterr().out
    assert "\\ud83d" not in out  # a JSON surrogate pair, which go-yaml (the registry) refuses
    block = yaml.safe_load(out)
    assert block["auth"]["token"]["issuer"] == issuer
    assert block["auth"]["token"]["service"] == service
    assert block["auth"]["token"]["rootcertbundle"] == str(tmp_path / "keys" / "bundle.pem")


def test_registry_config_warns_until_the_ring_exists(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The block named a bundle.pem nobody had made, silently: the registry would not start."""
    assert run(["registry-config", "--config", str(config)], serve=Recorder()) == 0
    out, err = capsys.readouterr()
    assert "rootcertbundle: " in out
    keys_dir = config.parent / "keys"
    assert err == (
        f"registry-auth: warning: no key ring in {keys_dir} yet: the registry cannot start "
        f"without its bundle.pem; run `registry-auth keys generate --config {config}` first\n"
    )
    generate_key(keys_dir)
    assert run(["registry-config", "--config", str(config)], serve=Recorder()) == 0
    assert capsys.readouterr().err == ""


def test_serve_with_a_config_makes_no_development_key(config: Path) -> None:
    recorder = Recorder()
    assert run(["serve", "--config", str(config), "--port", "6000"], serve=recorder) == 0
    settings, host, port = recorder.calls[0]
    assert (host, port) == (None, 6000)
    assert settings.service == "registry.local"
    assert not (config.parent / "keys").exists()  # no development key with a config file


def test_serve_without_config_prepares_a_development_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    assert run(["serve"], serve=Recorder()) == 0
    out, err = capsys.readouterr()
    kid = load_keyring(tmp_path / "keys").active.kid
    assert f"generated development key {kid}" in err
    assert "created empty" in err
    # stdout: nothing (once serving, audit lines only); the registry block goes with the notices
    assert out == ""
    assert "# Paste into the registry's config.yml:\nauth:\n  token:\n" in err
    assert (tmp_path / "users.htpasswd").stat().st_mode & 0o777 == 0o600


def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG + "token_ttl: 0\n")
    assert run(["registry-config", "--config", str(path)], serve=Recorder()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("registry-auth: error: config: token_ttl:")


def test_serve_refuses_to_start_without_a_key(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config.parent / "users.htpasswd").write_text("")
    assert run(["serve", "--config", str(config)], serve=serve) == 2
    err = capsys.readouterr().err
    assert "no signing key" in err
    assert "registry-auth keys generate" in err


def test_serve_refuses_a_key_readable_by_others(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config.parent / "users.htpasswd").write_text("")
    run(["keys", "generate", "--config", str(config)], serve=serve)
    next((config.parent / "keys").glob("*.key")).chmod(0o640)
    assert run(["serve", "--config", str(config)], serve=serve) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_serve_refuses_a_missing_user_file(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["keys", "generate", "--config", str(config)], serve=serve)
    assert run(["serve", "--config", str(config)], serve=serve) == 2
    assert "cannot read htpasswd file" in capsys.readouterr().err


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [((*path, name), sub), *_subcommands(sub, (*path, name))]
    return found


def test_every_subcommands_help_says_what_it_does() -> None:
    """`serve --help`, `users add --help`, `tokens revoke --help`... showed only the usage."""
    commands = _subcommands(build_parser())
    assert len(commands) > 30
    for path, parser in commands:
        assert parser.description, f"{' '.join(path)} --help says nothing of what it does"


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["acl", "check"], "exit status: 0 the policy loads, 1 it does not"),
        (["logins", "check"], "exit status: 0 accepted, 1 refused, 3 a backend"),
        (["registry-check"], "exit status: 0 no problem found, 1 a problem"),
        (["healthcheck"], "exit status: 0 healthy, 1 not"),
    ],
)
def test_help_says_an_exit_status_beyond_done_or_error(
    argv: list[str], status: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        run([*argv, "--help"], serve=Recorder())
    assert status in " ".join(capsys.readouterr().out.split())
