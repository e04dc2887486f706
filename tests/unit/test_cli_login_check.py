"""`registry-auth logins check`: a login tried through the configured backends as the server
would try it, with what each backend said and what the scopes would get; nothing counted."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.authn.htpasswd import hash_password
from app.authn.robot_store import create_robot
from app.cli import run
from app.settings import load_settings
from app.state.attempts import counter_keys
from app.state.sqlite import SqliteStore
from tests.unit.test_cli_errors import fails, no_serve

CONFIG = """issuer: auth
service: registry.test
realm: https://auth.test/token
auth_backends:
  - {type: htpasswd, path: admins.htpasswd, name: admins, accounts: "root|admin"}
  - {type: static, path: users.yaml}
acl: acl.yaml
state: {path: state.db}
"""
ACL = """groups: {dev: []}
rules:
  - match: {group: dev, name: "team/*"}
    allow: [pull, push]
  - match: {account: "*"}
    allow: [pull]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "admins.htpasswd").write_text(f"root:{hash_password('root-pw', rounds=4)}\n")
    bcrypt = hash_password("carol-pw", rounds=4)
    (tmp_path / "users.yaml").write_text(
        f'users:\n  carol:\n    password: "{bcrypt}"\n    groups: [dev]\n'
    )
    (tmp_path / "acl.yaml").write_text(ACL)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def _check(
    capsys: pytest.CaptureFixture[str], config: Path, password: str, *argv: str
) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(password + "\n"))
        code = run(
            ["logins", "check", "--config", str(config), "--password-stdin", *argv],
            serve=no_serve,
        )
    return code, capsys.readouterr().out


def test_an_accepted_login_shows_who_said_so_and_what_the_scopes_get(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(
        capsys, config, "carol-pw", "carol", "repository:team/app:pull,push", "repository:x/y:push"
    )
    assert code == 0
    assert out == (
        "admins: does not answer for this name (its `accounts`, or robot names)\n"
        "static: accepted\n"
        "accepted as 'carol'; groups: dev\n"
        "  repository:team/app: pull, push\n"
        "  repository:x/y: nothing\n"
    )


def test_a_refused_login_says_which_backend_refused_and_counts_nothing(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(capsys, config, "wrong", "carol", "--ip", "203.0.113.9")
    assert code == 1
    assert "static: refused (it knows the name; the password is wrong)\n" in out
    assert out.endswith("refused: 'carol' would get 401\n")
    code, out = _check(capsys, config, "x", "nobody")
    assert code == 1
    assert "static: not mine (it does not know the name)\n" in out
    store = SqliteStore(load_settings(config).state.path)
    assert store.failures(list(counter_keys("carol", "203.0.113.9")), 0, 10**10) == {}


def test_a_backend_failing_is_an_outage_as_in_the_server_not_a_traceback(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server makes any error of a backend a 503; `logins check` printed its traceback
    (a webhook's answer nested too deep for the JSON parser: a RecursionError)."""

    async def broken(*_: object) -> object:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("app.authn.static.StaticAuthenticator.authenticate", broken)
    code, out = _check(capsys, config, "carol-pw", "carol")
    assert code == 3
    assert out.endswith("static: unavailable (internal error): the server would answer 503\n")


def test_bad_input_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["logins", "check", "--config", str(config), "--password-stdin"]
    assert "--ip 'here': not an IP address" in fails(
        capsys, *base, "carol", "--ip", "here", stdin="pw\n"
    )
    assert "--service 'elsewhere'" in fails(
        capsys, *base, "carol", "--service", "elsewhere", stdin="pw\n"
    )
    assert "is not type:name:actions" in fails(capsys, *base, "carol", "repo", stdin="pw\n")
    assert fails(capsys, *base, "carol", stdin="\n") == "empty password"


def test_scopes_may_follow_the_options(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The README's synopsis: NAME [--password-stdin] [--service S] [--ip IP] [SCOPE...]. The
    # scopes after an option were an "unrecognized arguments" error.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO("carol-pw\n"))
        argv = ["logins", "check", "carol", "--password-stdin", "--config", str(config)]
        code = run([*argv, "repository:team/app:pull,push", "repository:x/y:push"], serve=no_serve)
    assert code == 0
    assert capsys.readouterr().out.endswith(
        "  repository:team/app: pull, push\n  repository:x/y: nothing\n"
    )
    # Scopes on both sides of an option are one list; an unknown option is still refused.
    code, out = _check(
        capsys, config, "carol-pw", "carol", "repository:team/app:pull", "--ip", "10.0.0.1",
        "repository:x/y:push",
    )  # fmt: skip
    assert code == 0
    assert out.endswith("  repository:team/app: pull\n  repository:x/y: nothing\n")
    with pytest.raises(SystemExit):
        run(["logins", "check", "carol", "--nope", "repository:a/b:pull"], serve=no_serve)
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


def test_an_expired_robot_is_said_expired_not_a_wrong_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "Why can't this robot push?" was answered "the password is wrong"."""
    robots = tmp_path / "robots.yaml"
    _, secret = create_robot(robots, "ci", [], datetime.now(UTC) - timedelta(minutes=1))
    config = tmp_path / "config.yaml"
    config.write_text(
        "issuer: auth\nservice: registry.test\nrealm: https://auth.test/token\n"
        "auth_backends:\n  - {type: robots, path: robots.yaml}\nstate: {backend: none}\n"
    )
    code, out = _check(capsys, config, secret, "robot$ci")
    assert code == 1
    assert (
        "robots: refused (the password is right, but the account, or the token given as its "
        "password, has expired)"
    ) in out
