"""Editing an htpasswd file in place: add or change, remove, list. Other lines stay intact."""

from __future__ import annotations

from pathlib import Path

from app.atomic import editing, write_atomic
from app.authn.htpasswd import (
    BOM,
    MAX_ACCOUNT_LENGTH,
    hash_password,
    parse_htpasswd,
    validate_account,
)
from app.errors import UserStoreError


def read_lines(path: Path, *, check: bool = True) -> list[str]:
    """The file's lines (without a byte-order mark: rewritten without it); `check`: refused
    as the service would refuse the file."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserStoreError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserStoreError(f"htpasswd file {path} is not UTF-8 text") from None
    if check:
        parse_htpasswd(text, path)
    return text.removeprefix(BOM).splitlines()


def _edited(lines: list[str], index: int | None, entry: str | None) -> list[str]:
    """`lines` with the line at `index` replaced by `entry` (None: removed), or with `entry`
    added (no index)."""
    if index is None:
        return [*lines, entry] if entry is not None else lines
    return [*lines[:index], *([entry] if entry is not None else []), *lines[index + 1 :]]


def file_problem(path: Path) -> str | None:
    """Why the service would refuse the file as it is now, if it would."""
    try:
        read_lines(path)
    except UserStoreError as exc:
        return str(exc)
    return None


def list_accounts(path: Path) -> list[str]:
    return list(parse_htpasswd("\n".join(read_lines(path)), path))


def set_user(path: Path, account: str, password: str, *, rounds: int = 10) -> bool:
    """Add the account or change its password. True when it was new.

    set_user and remove_user edit a file the service refuses too (`file_problem` says why):
    the refusal may be the very account being re-created (a hash that is not bcrypt, which
    the error says to re-create with `users add`), and with several such lines each is fixed
    in turn."""
    validate_account(account)
    if len(account) > MAX_ACCOUNT_LENGTH:  # only here: a file that loads keeps loading
        raise UserStoreError(
            f"invalid account name {account[:20]!r}...: longer than {MAX_ACCOUNT_LENGTH} "
            "characters (it could never log in)"
        )
    if account.startswith("#"):  # its line would be a comment: added, yet unable to log in
        raise UserStoreError(
            f"invalid account name {account!r}: a line starting with '#' is a comment in "
            "an htpasswd file"
        )
    entry = f"{account}:{hash_password(password, rounds=rounds)}"
    with editing(path, UserStoreError):
        lines = read_lines(path, check=False)
        index = _find(lines, account)
        _write(path, _edited(lines, index, entry))
    return index is None


def remove_user(path: Path, account: str) -> None:
    with editing(path, UserStoreError):
        lines = read_lines(path, check=False)
        index = _find(lines, account)
        if index is None:
            raise UserStoreError(f"no account {account!r} in {path}")
        _write(path, _edited(lines, index, None))


def _find(lines: list[str], account: str) -> int | None:
    prefix = f"{account}:"
    for index, line in enumerate(lines):
        if line.strip().startswith(prefix):
            return index
    return None


def _write(path: Path, lines: list[str]) -> None:
    # No mkdir: a mistyped directory is an error (write_atomic names the path), not a new tree.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    write_atomic(path, "".join(f"{line}\n" for line in lines).encode("utf-8"), mode=mode)
