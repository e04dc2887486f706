"""`registry-auth users ...`: edit the htpasswd file (bcrypt), keeping other lines; print a
bcrypt hash for a file edited by hand (a static users file)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.authn.htpasswd import hash_password
from app.authn.users import file_problem, list_accounts, remove_user, set_user
from app.backend_settings import ROBOT_PREFIX, HtpasswdBackend
from app.cli_common import config_option, path_argument, read_new_password, user_file
from app.errors import UserStoreError
from app.settings import load_settings


def add_commands(parser: argparse.ArgumentParser) -> None:
    users = parser.add_subparsers(dest="users_command", required=True, metavar="USERS_COMMAND")
    for name, text in (("add", "add a user or change a password"), ("remove", "remove a user")):
        sub = users.add_parser(name, help=text)
        sub.add_argument("name")
        _users_options(sub)
    add = users.choices["add"]
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _users_options(users.add_parser("list", help="list the users"))
    text = "print a bcrypt hash of a password (for a static users file or an htpasswd line)"
    hashing = users.add_parser("hash", help=text, description=text)
    hashing.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )


def _users_options(parser: argparse.ArgumentParser) -> None:
    config_option(parser)
    parser.add_argument(
        "--htpasswd", type=path_argument, help="htpasswd file (overrides `htpasswd`)"
    )


def run(args: argparse.Namespace) -> int:
    if args.users_command == "hash":
        # The cost `users add` uses (hash_password's default, as set_user's).
        print(hash_password(read_new_password(args.password_stdin)))
        return 0
    adding = args.users_command == "add"
    if adding:
        _check_not_robot(args.name)
    path = user_file(_htpasswd_path(args), "htpasswd file", create=adding)
    password = read_new_password(args.password_stdin) if adding else ""
    return _edit(args, path, password)


def _edit(args: argparse.Namespace, path: Path, password: str) -> int:
    if args.users_command == "list":
        for account in list_accounts(path):
            print(account)
        return 0
    if args.users_command == "remove":
        remove_user(path, args.name)
        print(f"removed {args.name} from {path}")
        return _still_refused(path)
    created = set_user(path, args.name, password)
    print(f"{'added' if created else 'changed password of'} {args.name} in {path}")
    _warn_if_world_readable(path)
    return _still_refused(path)


def _still_refused(path: Path) -> int:
    """An edit goes through on a file the service refuses (it may fix the line refused), but
    does not end silently while the file is still refused: exit status 1, and why."""
    problem = file_problem(path)
    if problem is None:
        return 0
    print(f"registry-auth: the service still refuses this file: {problem}", file=sys.stderr)
    return 1


def _warn_if_world_readable(path: Path) -> None:
    """An edit keeps the file's mode (an operator may have made it readable by the service's
    group); readable by everyone, its bcrypt hashes are open to offline guessing: say so."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o004:
        print(
            f"registry-auth: warning: {path} is readable by every user (mode {mode:04o}): "
            f"`chmod o-r {path}` (new files are made 0600)",
            file=sys.stderr,
        )


def _check_not_robot(account: str) -> None:
    # The chain sends every robot$ name to the robots store alone (app.authn.chain): such an
    # htpasswd user could never log in.
    if account.startswith(ROBOT_PREFIX):
        raise UserStoreError(
            f"{account!r} is a robot account name (it starts with {ROBOT_PREFIX!r}), which only "
            "the robots file can hold: use `registry-auth robots create`"
        )


def _htpasswd_path(args: argparse.Namespace) -> Path:
    if args.htpasswd is not None:
        return Path(args.htpasswd)
    settings = load_settings(args.config)
    for backend in settings.auth_backends or []:
        if isinstance(backend, HtpasswdBackend):
            return backend.path
    if settings.auth_backends:  # where `htpasswd` itself is refused
        raise UserStoreError(
            "no htpasswd backend in the config's auth_backends: add one "
            "(`- {type: htpasswd, path: users.htpasswd}`) or pass --htpasswd"
        )
    if settings.htpasswd is None:
        raise UserStoreError("no htpasswd file: set `htpasswd` in the config or pass --htpasswd")
    return settings.htpasswd
