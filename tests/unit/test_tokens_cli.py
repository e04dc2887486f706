"""`registry-auth tokens list|revoke` on a SQLite store: what an operator types and reads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from app.cli import run
from app.protocol.tokens import rfc3339
from app.state.refresh import RefreshPolicy, RefreshTokens
from app.state.sqlite import SqliteStore


def _no_serve(*_: object) -> None:
    raise AssertionError("serve must not run")


@pytest.fixture
def config(tmp_path: Path, rsa_keys_dir: Path) -> Path:
    path = tmp_path / "config.yaml"
    settings = {
        "issuer": "i",
        "service": "s",
        "realm": "http://a.test/token",
        "keys_dir": str(rsa_keys_dir),
    }
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
def issued(tmp_path: Path) -> dict[str, str]:
    """Three tokens in the default state file next to the config: id -> token."""
    tokens = RefreshTokens(SqliteStore(tmp_path / "registry-auth.db"), RefreshPolicy(86400, 3600))
    result = {}
    for n, (account, client) in enumerate(
        (("alice", "docker"), ("alice", "ci"), ("bob", "docker"))
    ):
        token, record = tokens.issue(account, "s", client, "v", 1_800_000_000 + n)
        result[record.id] = token
    return result


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv), serve=_no_serve)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_token_but_never_the_token_itself(
    config: Path, issued: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, "tokens", "list", "--config", str(config))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "ACCOUNT", "CLIENT_ID", "CREATED", "LAST_USED", "EXPIRES", "STATE",
    ]  # fmt: skip
    assert [line.split()[1:3] for line in lines[1:]] == [
        ["alice", "docker"],
        ["alice", "ci"],
        ["bob", "docker"],
    ]
    assert lines[1].split()[3:] == [
        "2027-01-15T08:00:00Z",
        "2027-01-15T08:00:00Z",
        "2027-01-16T08:00:00Z",
        "live",
    ]
    for token in issued.values():
        assert token not in out


def test_list_says_when_a_token_dies_of_idleness_and_that_it_has(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It showed the lifetime's end only: a token unused past the idle timeout was listed as
    good for months, and refused at its next use."""
    config.write_text(config.read_text() + "refresh_token_idle_timeout: 3600\n")
    tokens = RefreshTokens(SqliteStore(tmp_path / "registry-auth.db"), RefreshPolicy(86400, 3600))
    now = int(time.time())
    tokens.issue("busy", "s", "docker", "v", now - 60)
    tokens.issue("idle", "s", "docker", "v", now - 7200)  # unused for two hours
    _, out, _ = _cli(capsys, "tokens", "list", "--config", str(config))
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
    assert rows["idle"][5:] == [rfc3339(now - 7200 + 3600), "dead"]
    assert rows["busy"][5:] == [rfc3339(now - 60 + 3600), "live"]


def test_list_one_account(
    config: Path, issued: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = _cli(capsys, "tokens", "list", "--account", "bob", "--config", str(config))
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["bob"]


@pytest.mark.parametrize(
    ("selector", "count", "left"),
    [
        (["--account", "alice"], 2, ["bob"]),
        (["--all"], 3, []),
        (["--account", "nobody"], 0, ["alice", "alice", "bob"]),
    ],
)
@pytest.mark.usefixtures("issued")
def test_revoke_by_account_or_all(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    selector: list[str],
    count: int,
    left: list[str],
) -> None:
    code, out, err = _cli(capsys, "tokens", "revoke", *selector, "--config", str(config))
    assert code == 0
    assert f"revoked {count} refresh token(s)" in out
    # A misspelt name during an incident must not pass unnoticed.
    assert ("account 'nobody' has no refresh token" in err) == (selector[-1] == "nobody")
    _, listing, _ = _cli(capsys, "tokens", "list", "--config", str(config))
    assert [line.split()[1] for line in listing.splitlines()[1:]] == left


def test_revoke_by_id(
    config: Path, issued: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    first = next(iter(issued))
    code, out, _ = _cli(capsys, "tokens", "revoke", "--id", first, "--config", str(config))
    assert (code, out.strip()) == (0, "revoked 1 refresh token(s)")
    _, listing, _ = _cli(capsys, "tokens", "list", "--config", str(config))
    assert first not in listing
    assert len(listing.splitlines()) == 3


def test_revoke_an_unknown_id_fails(
    config: Path, issued: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "tokens", "revoke", "--id", "nope", "--config", str(config))
    # As `users remove` of an unknown user: the one-line error of every command, exit 2.
    assert (code, err) == (2, "registry-auth: error: no refresh token with id 'nope'\n")


def test_revoke_needs_exactly_one_selector(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        run(
            ["tokens", "revoke", "--all", "--account", "a", "--config", str(config)],
            serve=_no_serve,
        )
    with pytest.raises(SystemExit):
        run(["tokens", "revoke", "--config", str(config)], serve=_no_serve)


def test_without_the_servers_state_file_nothing_is_claimed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    expected = f"{tmp_path / 'registry-auth.db'} does not exist (without --config"
    code, out, _ = _cli(capsys, "tokens", "list")
    assert code == 0
    assert out.startswith(f"no refresh tokens: {expected}")
    code, _, err = _cli(capsys, "tokens", "revoke", "--all")
    assert code == 2
    assert f"state.path: nothing to revoke: {expected}" in err
    assert "revoked" not in err
    assert not (tmp_path / "registry-auth.db").exists()
