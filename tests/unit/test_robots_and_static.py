"""Robot accounts (store, CLI, authenticator) and static YAML users, with a fixed clock."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import pytest
from pydantic import SecretStr

from app.authn import robot_store
from app.authn.base import Credentials, Outcome
from app.authn.build import build_authentication
from app.authn.htpasswd import load_htpasswd
from app.authn.robot_store import create_robot, list_robots, parse_expiry, revoke_robot
from app.authn.robots import Robot, RobotAuthenticator, load_robots
from app.authn.static import StaticAuthenticator, load_static_users
from app.cli import run
from app.errors import UserStoreError
from app.settings import Settings, load_settings

pytestmark = pytest.mark.anyio
NOW = 1_800_000_000.0


def no_serve(*_: object) -> None:
    raise AssertionError("serve must not run")


def test_create_stores_only_a_hash_with_expiry_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "robots.yaml"
    expires = parse_expiry("90d", NOW)
    robot, secret = create_robot(path, "ci", ["ci", "build"], expires, clock=lambda: NOW)
    text = path.read_text()
    assert robot.name == "robot$ci"
    assert secret not in text
    assert len(secret) >= 43  # 256 bits, base64url
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "expires: '2027-04-15T08:00:00Z'" in text  # 90 days after 2027-01-15T08:00Z
    (loaded,) = list_robots(path)
    assert loaded.groups == {"ci", "build"}
    assert loaded.expires == datetime.fromtimestamp(NOW + 90 * 86400, UTC)


def test_names_are_checked_and_unique(tmp_path: Path) -> None:
    path = tmp_path / "robots.yaml"
    create_robot(path, "robot$ci", [], None)  # the prefix may be given; it is not doubled
    with pytest.raises(UserStoreError, match="exists"):
        create_robot(path, "ci", [], None)
    for bad in ["", "CI", "a b", "robot$", "x" * 65, "../x"]:
        with pytest.raises(UserStoreError, match="invalid robot name"):
            create_robot(path, bad, [], None)


_DIGEST = "ab" * 32


@pytest.mark.parametrize(
    ("groups", "problem"),
    [
        ("ci", "must be a list of group names"),
        ("['']", "'' is not a group name"),
        ('["a\\nb"]', "'a\\nb' is not a group name"),
        ("[[ci]]", "['ci'] is not a group name"),
    ],
)
def test_robot_groups_are_names_on_one_line(tmp_path: Path, groups: str, problem: str) -> None:
    # The rule `robots create` checks --groups with, so it never writes a file refused here.
    path = tmp_path / "robots.yaml"
    path.write_text(f"robots:\n  robot$ci:\n    sha256: {_DIGEST}\n    groups: {groups}\n")
    with pytest.raises(UserStoreError) as raised:
        load_robots(path)
    assert str(raised.value) == f"{path}: robots.robot$ci: groups: {problem}" + (
        "" if problem.startswith("must") else " (one line of printable text)"
    )


@pytest.mark.parametrize("text", ["90", "0d", "1y", "-1d", "forever"])
def test_bad_expiry_is_refused(text: str) -> None:
    with pytest.raises(UserStoreError, match="--expires"):
        parse_expiry(text, NOW)


async def test_robot_authenticator_checks_secret_then_expiry(tmp_path: Path) -> None:
    path = tmp_path / "robots.yaml"
    _, secret = create_robot(path, "ci", ["ci"], parse_expiry("1h", NOW))
    clock = [NOW]
    backend = RobotAuthenticator(lambda: load_robots(path), clock=lambda: clock[0])

    async def ask(account: str, password: str) -> Outcome:
        return (await backend.authenticate(Credentials(account, SecretStr(password)))).outcome

    assert await ask("robot$ci", secret) is Outcome.ACCEPTED
    assert await ask("robot$ci", secret + "x") is Outcome.REJECTED
    assert await ask("robot$other", secret) is Outcome.NOT_MINE
    clock[0] = NOW + 3600  # the expiry instant itself is already expired
    # Said as such: `logins check` blamed the password ("the password is wrong").
    assert await ask("robot$ci", secret) is Outcome.EXPIRED
    assert await ask("robot$ci", secret + "x") is Outcome.REJECTED
    revoke_robot(path, "ci")
    assert await ask("robot$ci", secret) is Outcome.NOT_MINE


def test_cli_create_prints_the_secret_once_list_and_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "robots.yaml")
    assert (
        run(["robots", "create", "ci", "--groups", "ci", "--robots-file", path], serve=no_serve)
        == 0
    )
    out = capsys.readouterr()
    secret = out.out.strip()
    assert len(secret.splitlines()) == 1
    assert "shown once" in out.err
    assert run(["robots", "list", "--robots-file", path], serve=no_serve) == 0
    listed = capsys.readouterr().out
    assert "robot$ci\tactive" in listed
    assert secret not in listed
    assert run(["robots", "revoke", "ci", "--robots-file", path], serve=no_serve) == 0
    assert run(["robots", "revoke", "ci", "--robots-file", path], serve=no_serve) == 2
    assert "no robot 'robot$ci'" in capsys.readouterr().err


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_cli_create_saves_nothing_when_the_secret_cannot_be_shown(
    tmp_path: Path, stdout: str
) -> None:
    """The robot was saved first: with stdout full (`> /dev/full`) or closed (`>&-`, then a
    traceback) it existed with a secret nobody saw, and creating it again was refused."""
    path = tmp_path / "robots.yaml"
    command = [sys.executable, "-m", "app", "robots", "create", "ci", "--robots-file", str(path)]
    with Path("/dev/full").open("wb") as full:
        done = subprocess.run(
            command,
            stdout=full if stdout == "full" else None,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            # `>&-`: the child starts without a descriptor 1 (Python then has no sys.stdout).
            preexec_fn=(lambda: os.close(1)) if stdout == "closed" else None,
        )
    assert done.returncode == 2, done.stderr
    assert "nothing saved" in done.stderr
    assert "Traceback" not in done.stderr
    assert load_robots(path) == {}


def test_cli_create_says_a_shown_secret_is_void_when_the_save_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is written as it is before the secret is shown (a place no file can be
    written fails then); a disk that fills in between is the case left."""
    written = robot_store._write

    def fills_up(path: Path, robots: dict[str, Robot]) -> None:
        if robots:  # the save with the new robot
            raise UserStoreError(f"cannot write {path}: No space left on device")
        written(path, robots)

    monkeypatch.setattr(robot_store, "_write", fills_up)
    path = str(tmp_path / "robots.yaml")
    assert run(["robots", "create", "ci", "--robots-file", path], serve=no_serve) == 2
    out, err = capsys.readouterr()
    assert out.strip()  # it was shown...
    assert err.endswith(
        "No space left on device; the secret shown above is void: nothing was saved\n"
    )


def test_cli_without_a_robots_backend_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("issuer: i\nservice: s\nrealm: http://a/token\n")
    assert run(["robots", "list", "--config", str(config)], serve=no_serve) == 2
    assert "add `- type: robots` to auth_backends" in capsys.readouterr().err


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


async def test_static_users_with_groups(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(
        f"users:\n  kim:\n    password: '{_hash('kim-pw')}'\n    groups: [ci, ops]\n"
        f"  lee:\n    password: '{_hash('lee-pw')}'\n"
    )
    backend = StaticAuthenticator(lambda: load_static_users(path))
    kim = await backend.authenticate(Credentials("kim", SecretStr("kim-pw")))
    assert (kim.outcome, kim.groups) == (Outcome.ACCEPTED, {"ci", "ops"})
    lee = await backend.authenticate(Credentials("lee", SecretStr("lee-pw")))
    assert lee.groups == frozenset()
    wrong = await backend.authenticate(Credentials("kim", SecretStr("lee-pw")))
    assert wrong.outcome is Outcome.REJECTED
    stranger = await backend.authenticate(Credentials("max", SecretStr("x")))
    assert stranger.outcome is Outcome.NOT_MINE
    assert "$2b$" not in repr(load_static_users(path))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("users:\n  kim:\n    password: plain\n", "users.kim: password: does not use bcrypt"),
        ("users:\n  kim:\n    password: 5\n", "users.kim: password: must be a bcrypt hash"),
        (
            "users:\n  kim:\n    password: '$2b$99$" + "a" * 21 + "." + "a" * 31 + "'\n",
            "users.kim: password: bcrypt cost 99 is outside 4-31",
        ),
        # YAML's other readings of a name: they were accounts `False`, `83` and `None` (and
        # `0123` beside a quoted "83" was one account, the last of the two winning).
        ("users:\n  no: {{password: '{h}'}}\n", "an account name reads as a boolean (False)"),
        ("users:\n  0123: {{password: '{h}'}}\n", "an account name reads as a number (83)"),
        ("users:\n  null: {{password: '{h}'}}\n", "an account name reads as null (None)"),
        ("users:\n  kim:\n    password: '{h}'\n    groups: ci\n", "users.kim: groups"),
        ("users:\n  'k m':\n    password: '{h}'\n", "invalid account name"),
        (
            "users:\n  kim:\n    password: '{h}'\n    role: admin\n",
            "unknown key role (known: `password`, `groups`)",
        ),
        ("users:\n  kim:\n    password: '{h}'\n    groups: [\"ci\\nops\"]\n", "not a group name"),
        ("people: {{}}\n", "one key, `users`"),
        ("users: [\n", "not valid YAML"),
        ("users:\n  kim: {{password: '{h}'}}\n  kim: {{password: '{h}'}}\n", "duplicate key 'kim'"),
    ],
)
def test_static_users_file_errors_name_file_and_user(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text.format(h=_hash("x")))
    with pytest.raises(UserStoreError) as caught:
        load_static_users(path)
    assert words in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("kind", ["htpasswd", "static"])
def test_a_robot_name_in_a_users_file_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The chain sends robot$ names to the robots store alone: such an entry never logs in."""
    hashed = _hash("x")
    if kind == "htpasswd":
        path = tmp_path / "users.htpasswd"
        path.write_text(f"kim:{hashed}\nrobot$old:{hashed}\n")
        loaded = set(load_htpasswd(path).hashes)
    else:
        path = tmp_path / "users.yaml"
        entry = f"{{password: '{hashed}'}}"
        path.write_text(f"users:\n  kim: {entry}\n  robot$old: {entry}\n")
        loaded = set(load_static_users(path).users)
    assert loaded == {"kim", "robot$old"}
    assert f"{path}: robot$old can never log in" in caplog.text


def _robots_only(tmp_path: Path, path: Path) -> Settings:
    """Settings whose only backend is the robots file at `path`."""
    return load_settings(
        overrides={
            "issuer": "i",
            "service": "s",
            "realm": "http://a/token",
            "keys_dir": str(tmp_path / "keys"),
            "htpasswd": None,
            "auth_backends": [{"type": "robots", "path": str(path)}],
        }
    )


def test_a_deleted_robots_file_is_a_failed_reload_and_an_emptied_one_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting the file revoked every robot, with no word in the log: now it is refused, as
    for a users file; emptying it is applied with a warning."""
    path = tmp_path / "robots.yaml"
    settings = _robots_only(tmp_path, path)
    built = build_authentication(settings)  # no file yet: no robots, not an error
    (robots,) = built.reloadables
    assert robots.get() == {}
    create_robot(path, "deploy", ["ci"], None)
    assert robots.reload() is True
    path.rename(tmp_path / "moved.yaml")
    with caplog.at_level(logging.ERROR):
        assert robots.reload() is False
    assert "is gone (to revoke robots" in caplog.text
    assert "robot$deploy" in robots.get()
    # Nor does a new worker (granian's, forked from the process that saw the file) start on it.
    with pytest.raises(UserStoreError, match="is gone"):
        build_authentication(settings)
    path.write_text("robots: {}\n")
    with caplog.at_level(logging.WARNING):
        assert robots.reload() is True
    assert "now lists no account (it listed 1)" in caplog.text


def test_a_robots_file_that_is_not_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "robots.yaml"
    path.write_text("robots:\n  robot$a: {sha256: x\n")
    with pytest.raises(UserStoreError, match=r"robots\.yaml is not valid YAML at line 3: "):
        load_robots(path)
    path.write_text("robots:\n  robot$a: {}\n  robot$a: {}\n")
    with pytest.raises(UserStoreError, match=r"at line 3: duplicate key 'robot\$a'"):
        load_robots(path)


_ROBOTS_KNOWN = "`sha256`, `groups`, `created`, `expires`"
_ENTRY = f"robots:\n  robot$ci:\n    sha256: {_DIGEST}\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]\n", "must be a mapping with one key, `robots` (it is a list)"),
        ("robots\n", "must be a mapping with one key, `robots` (it is a string)"),
        (
            f"robts:\n  robot$ci: {{sha256: {_DIGEST}}}\n",
            "unknown key robts (known: `robots`)",
        ),
        (_ENTRY + "users: {}\n", "unknown key users (known: `robots`)"),
        ("robots: [robot$ci]\n", "robots: must map robot names to entries (it is a list)"),
        ("robots: 3\n", "robots: must map robot names to entries (it is a number)"),
        (
            "robots:\n  robot$ci:\n",
            f"robots.robot$ci: must be a mapping of {_ROBOTS_KNOWN} (it is empty)",
        ),
        (
            _ENTRY + "    expire: 2020-01-01T00:00:00Z\n    group: [admin]\n",
            f"robots.robot$ci: unknown key expire, group (known: {_ROBOTS_KNOWN})",
        ),
        (_ENTRY + "    groups: ''\n", "robots.robot$ci: groups: must be a list of group names"),
        (_ENTRY + "    expires: 20200101\n", "robots.robot$ci: expires: not an RFC 3339 time"),
        (_ENTRY.replace(_DIGEST, "zz" * 32), "robots.robot$ci: sha256: must be 64 hex digits"),
    ],
)
def test_a_robots_file_not_in_the_format_is_refused_naming_file_robot_and_key(
    tmp_path: Path, text: str, problem: str
) -> None:
    """A list, a string or a misspelled key was read as no robots: every robot revoked at the
    next reload, and `robots create` rewrote the file with the new robot alone."""
    path = tmp_path / "robots.yaml"
    path.write_text(text)
    with pytest.raises(UserStoreError) as raised:
        load_robots(path)
    assert str(raised.value) == f"{path}: {problem}"


def test_the_cli_refuses_to_rewrite_a_broken_robots_file_and_fills_an_empty_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "robots.yaml"
    file = str(path)
    for broken in ["[1, 2]\n", f"robts:\n  robot$old: {{sha256: {_DIGEST}}}\n"]:
        path.write_text(broken)
        assert run(["robots", "list", "--robots-file", file], serve=no_serve) == 2
        assert run(["robots", "create", "new1", "--robots-file", file], serve=no_serve) == 2
        assert path.read_text() == broken  # the earlier entries are not lost
        out = capsys.readouterr()
        assert out.out == ""  # no secret for a robot that was not made
        assert out.err.count(f"error: {path}: ") == 2
    # What means "no robots yet" stays valid, and a robot written by hand is kept.
    old = f"  robot$old: {{sha256: {_DIGEST}, groups: null, created: null, expires: 2020-01-01}}\n"
    for empty in ["", "# robots\n", "robots:\n", "robots: {}\n", "{}\n", "robots:\n" + old]:
        path.write_text(empty)
        assert run(["robots", "create", "new1", "--robots-file", file], serve=no_serve) == 0
        assert run(["robots", "list", "--robots-file", file], serve=no_serve) == 0
        listed = capsys.readouterr().out.splitlines()[1:]  # after the secret
        assert listed[0].startswith("robot$new1\tactive")
    assert listed[1:] == ["robot$old\tEXPIRED\texpires=2020-01-01T00:00:00Z\tgroups="]


def test_a_broken_robots_file_is_a_failed_reload_and_refused_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It was applied as no robots ("now lists no account (it listed 3)"): every robot locked
    out. Now the robots go on working, as for a broken users file, and a start refuses it."""
    path = tmp_path / "robots.yaml"
    settings = _robots_only(tmp_path, path)
    for name in ["a", "b", "c"]:
        create_robot(path, name, [], None)
    (robots,) = build_authentication(settings).reloadables
    before = robots.get()
    for broken, problem in [
        ("[1, 2]\n", "must be a mapping with one key, `robots` (it is a list)"),
        (path.read_text().replace("robots:", "robts:"), "unknown key robts"),
        (path.read_text() + "    expire: null\n", "robots.robot$c: unknown key expire"),
    ]:
        path.write_text(broken)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert robots.reload() is False
        assert f"keeping the previous one: {path}: {problem}" in caplog.text
        assert "now lists no account" not in caplog.text
        assert robots.get() is before
        with pytest.raises(UserStoreError, match=re.escape(f"{path}: {problem}")):
            build_authentication(settings)
