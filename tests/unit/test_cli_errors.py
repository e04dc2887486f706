"""What an operator sees when a `users`, `robots` or `keys` command cannot do its work: one
`registry-auth: error:` line naming the file and exit 2, never a traceback; and nothing
written that a later command (or the server) would refuse."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app import cli
from app.authn.robots import load_robots
from app.cli import run
from app.keys.model import Algorithm
from app.keys.store import generate_key, read_entries
from tests.unit.test_atomic import null_device


def no_serve(*_: object) -> None:
    raise AssertionError("serve must not run")


def fails(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> str:
    """The one error line of a command that must fail with exit 2."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        code = run(list(argv), serve=no_serve)
    err = capsys.readouterr().err
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith("registry-auth: error: ")
    return err.removeprefix("registry-auth: error: ").rstrip("\n")


@pytest.fixture
def ring(tmp_path: Path) -> Path:
    keys = tmp_path / "ring"
    generate_key(keys, Algorithm.ES256)
    return keys


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a directory\n")
    return path


# --- files that cannot be written ---------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_users_add_where_no_file_can_be_made(capsys: pytest.CaptureFixture[str]) -> None:
    message = fails(
        capsys, "users", "add", "bob", "--password-stdin", "--htpasswd", "/proc/users.htpasswd",
        stdin="pw\n",
    )  # fmt: skip
    assert message == "cannot write /proc/users.htpasswd: No such file or directory"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_robots_create_where_no_file_can_be_made(capsys: pytest.CaptureFixture[str]) -> None:
    message = fails(capsys, "robots", "create", "ci", "--robots-file", "/proc/robots.yaml")
    assert message == "cannot write /proc/robots.yaml: No such file or directory"


def test_keys_generate_into_a_file(a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = fails(capsys, "keys", "generate", "--keys-dir", str(a_file))
    assert message == f"keys directory {a_file}: not a directory"


def test_keys_generate_under_a_file(a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = fails(capsys, "keys", "generate", "--keys-dir", str(a_file / "keys"))
    assert message == f"cannot write in keys directory {a_file / 'keys'}: Not a directory"


def test_keys_sync_into_a_file(
    ring: Path, a_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = fails(
        capsys, "keys", "sync", "--from", str(ring), "--keys-dir", str(a_file), "--once"
    )
    assert message == f"keys directory {a_file}: not a directory"
    assert a_file.read_text() == "not a directory\n"


@pytest.mark.parametrize(
    ("output", "problem"),
    [("missing-dir/jwks.json", "No such file or directory"), ("a-dir", "Is a directory")],
)
def test_keys_jwks_output_that_cannot_be_written(
    ring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, problem: str
) -> None:
    (tmp_path / "a-dir").mkdir()
    target = tmp_path / output
    message = fails(capsys, "keys", "jwks", "--keys-dir", str(ring), "--output", str(target))
    assert message == f"cannot write {target}: {problem}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_os_error_no_module_converted_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object) -> int:
        raise PermissionError(13, "Permission denied", "/srv/keys/.sync-x")

    monkeypatch.setattr(cli, "_dispatch", broken)
    message = fails(capsys, "users", "list", "--htpasswd", "x")
    assert message == "/srv/keys/.sync-x: Permission denied"


def test_a_bug_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "_dispatch", broken)
    with pytest.raises(ValueError, match="a bug"):
        run(["users", "list", "--htpasswd", "x"], serve=no_serve)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["keys", "jwks"], "--output"),
        (["users", "add", "amy", "--password-stdin"], "--htpasswd"),
        (["users", "list"], "--htpasswd"),
        (["robots", "create", "ci"], "--robots-file"),
        (["robots", "list"], "--robots-file"),
    ],
)
def test_a_device_node_is_refused_not_replaced(
    ring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    """`keys jwks --output /dev/full` made /dev/full a regular file and said it wrote; a FIFO
    named as a users or robots file held the command for ever (app.atomic)."""
    node = null_device(tmp_path / "node")
    if argv[0] == "keys":
        argv = [*argv, "--keys-dir", str(ring)]
    message = fails(capsys, *argv, option, str(node), stdin="pw\n")
    assert message == f"{node} is a character device, not a regular file"
    assert stat.S_ISCHR(node.lstat().st_mode)


# --- files that cannot be read ------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["remove", "amy"], ["add", "amy"]])
def test_a_user_file_that_is_not_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = tmp_path / "bin.htpasswd"
    path.write_bytes(b"\xff\xfe\n")
    argv = ["users", *command, "--htpasswd", str(path)]
    if command[0] == "add":
        argv.append("--password-stdin")
    message = fails(capsys, *argv, stdin="pw\n")
    assert message == f"htpasswd file {path} is not UTF-8 text"
    assert path.read_bytes() == b"\xff\xfe\n"


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["users", "list"], "htpasswd file"),
        (["users", "remove", "amy"], "htpasswd file"),
        (["robots", "list"], "robots file"),
        (["robots", "revoke", "ci"], "robots file"),
    ],
)
def test_a_missing_file_to_read_is_an_error_not_an_empty_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], kind: str
) -> None:
    typo = tmp_path / "no-such-dir" / "file"
    option = "--htpasswd" if kind == "htpasswd file" else "--robots-file"
    message = fails(capsys, *argv, option, str(typo))
    assert message.startswith(f"{kind} {typo}: no such file")


@pytest.mark.parametrize(
    ("argv", "option", "kind"),
    [
        (["users", "add", "amy", "--password-stdin"], "--htpasswd", "htpasswd file"),
        (["robots", "create", "ci"], "--robots-file", "robots file"),
    ],
)
def test_a_new_file_needs_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str, kind: str
) -> None:
    typo = tmp_path / "typo" / "sub" / "file"
    message = fails(capsys, *argv, option, str(typo), stdin="pw\n")
    assert message == f"cannot create {kind} {typo}: no directory {typo.parent}"
    assert not (tmp_path / "typo").exists()


def test_a_new_file_in_an_existing_directory_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "users.htpasswd"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO("pw\n"))
        argv = ["users", "add", "amy", "--password-stdin", "--htpasswd", str(path)]
        assert run(argv, serve=no_serve) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- what would be written, refused first -------------------------------------------------


@pytest.mark.parametrize("group", ["", "two\nlines", "tab\there"])
def test_robots_create_refuses_a_group_the_robots_file_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], group: str
) -> None:
    path = tmp_path / "robots.yaml"
    message = fails(capsys, "robots", "create", "ci", "--groups", group, "--robots-file", str(path))
    assert message == f"--groups: {group!r} is not a group name (one line of printable text)"
    assert not path.exists()


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (
            ["--groups", "ci", "deployer"],
            "robots create: NAME is missing: --groups takes every word after it, so 'deployer' "
            "became a group; write NAME before --groups "
            "(`registry-auth robots create deployer --groups ci`)",
        ),
        (["--groups", "ci"], "robots create: NAME is missing (`registry-auth robots create NAME "
         "--groups ci`)"),
        ([], "robots create: NAME is missing (`registry-auth robots create NAME`)"),
    ],
)  # fmt: skip
def test_robots_create_without_a_name_says_where_it_went(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], words: list[str], said: str
) -> None:
    path = tmp_path / "robots.yaml"
    assert fails(capsys, "robots", "create", *words, "--robots-file", str(path)) == said
    assert not path.exists()


def test_robots_created_with_groups_load(tmp_path: Path) -> None:
    path = tmp_path / "robots.yaml"
    argv = ["robots", "create", "ci", "--groups", "ci", "team a", "--robots-file", str(path)]
    assert run(argv, serve=no_serve) == 0
    assert load_robots(path)["robot$ci"].groups == {"ci", "team a"}


def test_users_add_refuses_a_robot_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "users.htpasswd"
    message = fails(
        capsys, "users", "add", "robot$x", "--password-stdin", "--htpasswd", str(path),
        stdin="pw\n",
    )  # fmt: skip
    # The chain hands every robot$ name to the robots store alone: it could never log in.
    assert message.startswith("'robot$x' is a robot account name")
    assert message.endswith("use `registry-auth robots create`")
    assert not path.exists()


# --- symlinks are written through ---------------------------------------------------------


def test_users_add_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "shared" / "users.htpasswd"
    target.parent.mkdir()
    target.write_text("")
    target.chmod(0o640)
    link = tmp_path / "users.htpasswd"
    link.symlink_to(os.path.relpath(target, tmp_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO("pw\n"))
        argv = ["users", "add", "fay", "--password-stdin", "--htpasswd", str(link)]
        assert run(argv, serve=no_serve) == 0
    assert link.is_symlink()
    assert target.read_text().startswith("fay:$2b$")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the mode the operator chose


def test_robots_create_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "robots-real.yaml"
    link = tmp_path / "robots.yaml"
    link.symlink_to(target.name)
    assert run(["robots", "create", "ci", "--robots-file", str(link)], serve=no_serve) == 0
    assert link.is_symlink()
    assert list(load_robots(target)) == ["robot$ci"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_keys_add_refuses_a_missing_ring_and_makes_no_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "keys"
    message = fails(capsys, "keys", "add", "--keys-dir", str(missing))
    assert message == (
        f"no key ring in {missing}: run `registry-auth keys generate --keys-dir {missing}` "
        "first, or give the --config or --keys-dir of the ring"
    )
    assert not missing.exists()


def test_keys_generate_then_add_still_work(ring: Path) -> None:
    assert (
        run(["keys", "add", "--keys-dir", str(ring), "--algorithm", "ES256"], serve=no_serve) == 0
    )
    assert [e.state.value for e in read_entries(ring)] == ["active", "next"]


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, False), (0o600, False)])
def test_users_add_warns_when_every_user_can_read_the_hashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int, warned: bool
) -> None:
    path = tmp_path / "users.htpasswd"
    path.write_text("")
    path.chmod(mode)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO("pw\n"))
        argv = ["users", "add", "fay", "--password-stdin", "--htpasswd", str(path)]
        assert run(argv, serve=no_serve) == 0
    assert stat.S_IMODE(path.stat().st_mode) == mode  # kept: the operator's choice
    assert ("readable by every user (mode 0644)" in capsys.readouterr().err) is warned


@pytest.mark.parametrize("command", ["config-reference", "registry-config"])
def test_output_into_a_closed_pipe_ends_quietly(command: str) -> None:
    """`registry-auth config-reference | head -1`: the reader is gone before the output ends.
    That was `registry-auth: error: Broken pipe` on stderr; a short output, written only when
    stdout is flushed (buffered, as in a shell), failed at exit with status 120."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "app", command], env=env,
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141


# --- options out of range ----------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "1e308", "301", "abc", ""])
def test_healthcheck_refuses_a_timeout_that_is_not_a_sane_number_of_seconds(
    capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    """-1, nan, inf and 1e308 ended in a traceback; 0 said `unhealthy (Operation now in
    progress)`, blaming the service for the HEALTHCHECK line's mistake."""
    message = fails(capsys, "healthcheck", f"--timeout={timeout}")
    assert message == f"--timeout {timeout!r}: give seconds, more than 0 and at most 300"


def test_healthcheck_probes_with_the_timeout_given(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float] = []

    def probe(_url: str, timeout: float) -> tuple[bool, str]:
        asked.append(timeout)
        return True, "healthy"

    monkeypatch.setattr("app.cli_health.probe", probe)
    assert run(["healthcheck", "--timeout", "0.5"], serve=no_serve) == 0
    assert asked == [0.5]


@pytest.mark.parametrize("errors", ["surrogateescape", "strict"])
def test_users_add_refuses_a_password_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], errors: str
) -> None:
    """`printf '\\xff\\xfe\\n' | users add nu --password-stdin`: a traceback. Python's stdin
    decodes with surrogateescape under C.UTF-8 (the bytes reach the bcrypt step as surrogates),
    strictly under other UTF-8 locales (the read itself fails)."""
    path = tmp_path / "users.htpasswd"
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\n"), encoding="utf-8", errors=errors)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", stdin)
        argv = ["users", "add", "nu", "--password-stdin", "--htpasswd", str(path)]
        code = run(argv, serve=no_serve)
    err = capsys.readouterr().err
    assert (code, err) == (2, "registry-auth: error: the password is not UTF-8 text\n")
    assert not path.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "generate", "--keys-dir", ""],
        ["users", "list", "--htpasswd", ""],
        ["robots", "list", "--robots-file", ""],
        ["acl", "check", "--acl", ""],
        ["serve", "--config", ""],
    ],
)
def test_an_empty_path_option_is_refused_before_anything_is_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    """`--keys-dir "$UNSET"` was `.`: a key ring made in the current directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        run(argv, serve=no_serve)
    assert exited.value.code == 2
    assert "an empty path: give a file or directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_users_add_with_a_backends_config_without_htpasswd_says_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "set `htpasswd` in the config", which a config with auth_backends refuses."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "issuer: i\nservice: s\nrealm: http://a/token\n"
        "auth_backends:\n  - {type: webhook, url: 'https://sso.test/check'}\n"
    )
    message = fails(capsys, "users", "add", "bob", "--config", str(config), "--password-stdin")
    assert message.startswith("no htpasswd backend in the config's auth_backends: add one")


@pytest.mark.parametrize("command", ["promote", "retire"])
def test_an_unknown_kid_is_said_alone_without_the_wait_warning(
    ring: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    message = fails(capsys, "keys", command, "NOPE", "--keys-dir", str(ring))
    assert "no key 'NOPE' in the ring" in message  # one line: no wait warning before it


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["robots", "create", "ci", "--expires", "-5d"], "--expires '-5d': use e.g. 90d"),
        (["keys", "rotate", "--promote-after", "-1m"], "--promote-after '-1m': give a delay"),
    ],
)
def test_a_negative_delay_gets_the_options_own_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    """argparse took `-5d` for an option of its own: "expected one argument", and a usage."""
    generate_key(tmp_path / "keys", Algorithm.ES256)
    where = ["--robots-file", str(tmp_path / "r.yaml")] if argv[0] == "robots" else []
    where += ["--keys-dir", str(tmp_path / "keys")] if argv[0] == "keys" else []
    assert fails(capsys, *argv, *where).startswith(message)
    assert not (tmp_path / "r.yaml").exists()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"state": {"backend": "etcd", "etcd_ca_cert": "missing-ca.pem"}}, "state.etcd_ca_cert"),
        ({"etcd": {"client_cert": "c.pem", "client_key": "c.key"}}, "etcd.client_cert"),
    ],
)  # fmt: skip
def test_serve_refuses_an_etcd_tls_file_it_cannot_read(
    capsys: pytest.CaptureFixture[str],
    ring: Path,
    tmp_path: Path,
    section: dict[str, dict[str, str]],
    key: str,
) -> None:
    """It started and said ready; the file was first read at the first login (or publish):
    no refresh token issued, counters in memory only, the key never published."""
    endpoints = {"state": "etcd_endpoints", "etcd": "endpoints"}
    config: dict[str, object] = {
        "issuer": "i", "service": "s", "realm": "http://a/token", "keys_dir": str(ring),
        "state": {"path": str(tmp_path / "state.db")},
    }  # fmt: skip
    for name, values in section.items():
        paths = {
            k: str(tmp_path / v) if k.endswith(("cert", "key")) else v for k, v in values.items()
        }
        config[name] = {**paths, endpoints[name]: ["https://etcd:2379"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    name, setting = key.split(".")
    expected = f"config: {key}: {tmp_path / section[name][setting]}: No such file or directory"
    assert fails(capsys, "serve", "--config", str(path)) == expected
