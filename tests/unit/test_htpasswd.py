from __future__ import annotations

import asyncio
from pathlib import Path

import bcrypt
import pytest
from pydantic import SecretStr

from app.authn import htpasswd
from app.authn.base import Credentials, Outcome
from app.authn.build import build_authentication
from app.authn.htpasswd import HtpasswdAuthenticator, load_htpasswd, parse_htpasswd
from app.authn.users import file_problem, list_accounts, remove_user, set_user
from app.errors import RegistryAuthError, UserStoreError
from app.settings import load_settings

FAST = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users.htpasswd"
    path.write_text(text)
    return path


@pytest.mark.parametrize("prefix", ["$2y$", "$2b$", "$2a$"])
def test_bcrypt_variants_are_accepted(prefix: str) -> None:
    hashed = prefix + FAST[4:]
    assert parse_htpasswd(f"alice:{hashed}\n", Path("f")) == {"alice": hashed.encode()}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "does not use bcrypt"),
        ("alice:$apr1$abc$defghijklmnopqrstuvwx", "does not use bcrypt"),
        ("alice:plaintext", "does not use bcrypt"),
        # Of bcrypt's shape, but refused by the bcrypt library at every check: a 503 for each
        # login of the account, or a traceback at the start (the dummy hash's cost).
        ("alice:" + FAST.replace("$04$", "$99$"), "bcrypt cost 99 is outside 4-31"),
        ("alice:" + FAST.replace("$04$", "$03$"), "bcrypt cost 3 is outside 4-31"),
        ("alice:" + FAST[:28] + "A" + FAST[29:], "the bcrypt hash's salt is malformed"),
        ("no-colon-here", "not an `account:hash` line"),
        (":" + FAST, "not an `account:hash` line"),
    ],
)
def test_other_schemes_are_refused_with_file_and_line(line: str, reason: str) -> None:
    text = f"# users\nbob:{FAST}\n\n{line}\n"
    with pytest.raises(UserStoreError) as caught:
        parse_htpasswd(text, Path("/etc/users.htpasswd"))
    assert "/etc/users.htpasswd:4:" in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize("salt_end", ".Oeu")
def test_every_salt_bcrypt_takes_is_accepted(salt_end: str) -> None:
    hashed = FAST[:28] + salt_end + FAST[29:]
    assert parse_htpasswd(f"alice:{hashed}\n", Path("f")) == {"alice": hashed.encode()}
    bcrypt.checkpw(b"s3cret", hashed.encode())  # the library takes it (no ValueError)


def test_duplicate_account_is_refused() -> None:
    with pytest.raises(UserStoreError, match="appears twice"):
        parse_htpasswd(f"a:{FAST}\na:{FAST}\n", Path("f"))


def test_a_file_written_by_apache_htpasswd_loads(tmp_path: Path) -> None:
    # What `htpasswd -B` writes: $2y$, cost 5 here to keep the test fast.
    text = "carol:$2y$05$akYqF81R0O0bzHL0RYajAuHJxMsxyEUQBPF4lqvofOHZDzRY5BsgK\n"
    users = load_htpasswd(_file(tmp_path, text))
    authenticator = HtpasswdAuthenticator(lambda: users)
    result = asyncio.run(authenticator.authenticate(Credentials("carol", SecretStr("pw"))))
    assert result.outcome is Outcome.ACCEPTED
    assert result.account == "carol"


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    """What a Windows editor writes first: kept, it locked alice out (`unknown account`), and
    `users add alice` then appended a second alice."""
    path = _file(tmp_path, f"\ufeffalice:{FAST}\nbob:{FAST}\n")
    users = load_htpasswd(path)
    authenticator = HtpasswdAuthenticator(lambda: users)
    result = asyncio.run(authenticator.authenticate(Credentials("alice", SecretStr("s3cret"))))
    assert result.outcome is Outcome.ACCEPTED
    set_user(path, "alice", "n3w", rounds=4)
    assert list_accounts(path) == ["alice", "bob"]
    assert not path.read_text(encoding="utf-8").startswith("\ufeff")


def _check(tmp_path: Path, account: str, password: str) -> Outcome:
    users = load_htpasswd(_file(tmp_path, f"alice:{FAST}\n"))
    authenticator = HtpasswdAuthenticator(lambda: users)
    return asyncio.run(
        authenticator.authenticate(Credentials(account, SecretStr(password)))
    ).outcome


def test_right_password_is_accepted(tmp_path: Path) -> None:
    assert _check(tmp_path, "alice", "s3cret") is Outcome.ACCEPTED


def test_wrong_password_is_rejected(tmp_path: Path) -> None:
    assert _check(tmp_path, "alice", "nope") is Outcome.REJECTED


def test_unknown_account_is_not_mine(tmp_path: Path) -> None:
    assert _check(tmp_path, "mallory", "s3cret") is Outcome.NOT_MINE


def test_password_longer_than_72_bytes_is_checked_not_crashed(tmp_path: Path) -> None:
    assert _check(tmp_path, "alice", "x" * 500) is Outcome.REJECTED


def test_unknown_account_pays_a_bcrypt_check(tmp_path: Path) -> None:
    users = load_htpasswd(_file(tmp_path, f"alice:{FAST}\n"))
    # The dummy hash has the cost of the file's entries, so unknown users cost as much.
    assert users.dummy_hash.startswith(b"$2b$04$")
    assert FAST not in repr(users)


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("alice", SecretStr("hunter2"))
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in str(credentials)


def test_users_add_change_remove_keeps_other_lines(tmp_path: Path) -> None:
    path = _file(tmp_path, f"# managed by hand\nbob:{FAST}\n")
    path.chmod(0o640)
    assert set_user(path, "alice", "pw1", rounds=4) is True
    assert set_user(path, "alice", "pw2", rounds=4) is False
    assert list_accounts(path) == ["bob", "alice"]
    assert path.read_text().startswith("# managed by hand\nbob:")
    assert path.stat().st_mode & 0o777 == 0o640
    remove_user(path, "bob")
    assert list_accounts(path) == ["alice"]
    with pytest.raises(UserStoreError, match="no account 'bob'"):
        remove_user(path, "bob")


def test_the_account_a_refusal_names_can_be_re_created_or_removed(tmp_path: Path) -> None:
    """The error says to re-create such an account with `users add`: that was refused too,
    the file being checked before any edit. Now each such line can be fixed in turn, and
    `file_problem` says what still keeps the service from loading the file."""
    sha = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
    path = _file(tmp_path, f"bob:{sha}\ncarol:{sha}\nalice:{FAST}\n")
    assert set_user(path, "bob", "pw", rounds=4) is False
    assert file_problem(path) is not None
    assert "users.htpasswd:2: account 'carol': does not use bcrypt" in str(file_problem(path))
    remove_user(path, "carol")
    assert file_problem(path) is None
    assert list_accounts(path) == ["bob", "alice"]
    assert path.read_text().startswith("bob:$2")


def test_new_user_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new.htpasswd"
    set_user(path, "alice", "pw", rounds=4)
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("account", ["a:b", "a b", "a\nb", "tab\there", "#ci", "x" * 256])
def test_invalid_account_names_are_refused(tmp_path: Path, account: str) -> None:
    with pytest.raises(UserStoreError, match="invalid account name"):
        set_user(tmp_path / "f", account, "pw", rounds=4)


def test_an_empty_account_name_is_called_empty(tmp_path: Path) -> None:
    """It was "no ':', spaces or control characters", which '' has none of."""
    with pytest.raises(UserStoreError, match=r"^the account name is empty$"):
        set_user(tmp_path / "f", "", "pw", rounds=4)


def test_password_over_72_bytes_is_refused_when_adding(tmp_path: Path) -> None:
    with pytest.raises(UserStoreError, match="72 bytes"):
        set_user(tmp_path / "f", "alice", "p" * 73, rounds=4)


def test_editing_a_file_that_is_not_text_names_it(tmp_path: Path) -> None:
    path = tmp_path / "users.htpasswd"
    path.write_bytes(b"\xff\xfe\n")
    with pytest.raises(UserStoreError, match="is not UTF-8 text"):
        set_user(path, "alice", "pw", rounds=4)
    assert path.read_bytes() == b"\xff\xfe\n"


def test_a_user_file_in_a_missing_directory_is_an_error_not_a_new_tree(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "users.htpasswd"
    with pytest.raises(RegistryAuthError, match=r"cannot write .*typo/users\.htpasswd"):
        set_user(path, "alice", "pw", rounds=4)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("second", ["htpasswd", "static"])
def test_every_name_costs_one_bcrypt_check_whichever_password_file_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    """An unknown name paid a dummy check in each password file: a name in the first of two
    took half the time of any other name, which told anyone timing logins who is in it."""
    (tmp_path / "admins.htpasswd").write_text(f"root:{FAST}\n")
    if second == "htpasswd":
        (tmp_path / "users").write_text(f"alice:{FAST}\n")
    else:
        (tmp_path / "users").write_text(f"users:\n  alice: {{password: '{FAST}'}}\n")
    backends = [
        {"type": "htpasswd", "path": str(tmp_path / "admins.htpasswd")},
        {"type": second, "path": str(tmp_path / "users"), "name": "users"},
    ]
    settings = load_settings(
        overrides={"htpasswd": None, "realm": "http://auth.test/token", "auth_backends": backends}
    )
    checks: list[bytes] = []
    real_check = htpasswd.check_password

    def counted(password: str, hashed: bytes) -> bool:
        checks.append(hashed)
        return real_check(password, hashed)

    monkeypatch.setattr(htpasswd, "check_password", counted)
    authentication = build_authentication(settings)

    async def logins() -> list[tuple[str, bool, int]]:
        chain = authentication.authenticator
        assert chain is not None
        seen = []
        try:
            for account in ("root", "alice", "nobody"):
                checks.clear()
                result = await chain.authenticate(Credentials(account, SecretStr("wrong")))
                seen.append((account, result.accepted, len(checks)))
        finally:
            for close in authentication.closers:
                await close()
        return seen

    assert asyncio.run(logins()) == [("root", False, 1), ("alice", False, 1), ("nobody", False, 1)]
