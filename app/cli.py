"""The `registry-auth` command line: serve, keys, users, registry-config, etcd, acl.

Never imports the web layer: `serve` is handed in by app.main.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from app.authn.robot_store import (
    create_robot,
    list_robots,
    parse_expiry,
    revoke_robot,
    robot_name,
)
from app.authn.robots import format_time
from app.authn.users import list_accounts, remove_user, set_user
from app.authz.base import Requester
from app.authz.engine import explain
from app.authz.files import load_policy
from app.authz.report import explanation_data, render_text
from app.backend_settings import ROBOT_PREFIX, HtpasswdBackend, RobotsBackend
from app.cli_keys import add_keys_commands, run_keys
from app.config_reference import render_reference, replace_block
from app.errors import ConfigError, PolicyError, RegistryAuthError, UserStoreError
from app.etcd.backend import open_backend
from app.etcd.publisher import Publisher
from app.etcd.record import describe, desired_record, encode_record, matches
from app.keys.store import bundle_path, generate_key, has_keys
from app.protocol.scopes import parse_scopes
from app.protocol.tokens import rfc3339
from app.service import refresh_tokens_from_settings
from app.settings import CONFIG_ENV, Settings, load_settings
from app.state.model import RefreshRecord

Serve = Callable[[Settings, str | None, int | None], None]
_LISTING_ROW = "{:<16}  {:<15}  {:<15}  {:<20}  {:<20}  {}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-auth", description="Token authorization server for Docker/OCI registries."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the token server")
    _config_option(serve)
    serve.add_argument("--host", help="listen address (overrides `listen`)")
    serve.add_argument("--port", type=int, help="listen port (overrides `listen`)")
    serve.add_argument(
        "--workers",
        type=_workers,
        help="server processes (overrides `workers`; 0: one per core)",
    )

    block = commands.add_parser("registry-config", help="print the registry's auth: token: block")
    _config_option(block)

    reference = commands.add_parser(
        "config-reference", help="print the configuration reference (Markdown)"
    )
    reference.add_argument(
        "--update", type=Path, metavar="FILE", help="rewrite the reference block inside FILE"
    )

    add_keys_commands(commands)

    users = commands.add_parser("users", help="manage htpasswd users").add_subparsers(
        dest="users_command", required=True, metavar="USERS_COMMAND"
    )
    for name, text in (("add", "add a user or change a password"), ("remove", "remove a user")):
        sub = users.add_parser(name, help=text)
        sub.add_argument("name")
        _users_options(sub)
    add = users.choices["add"]
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _users_options(users.add_parser("list", help="list the users"))
    _etcd_parser(commands)
    _acl_parser(commands)
    _add_robots_parser(commands)
    _tokens_parser(commands)
    return parser


def _tokens_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = commands.add_parser("tokens", help="list and revoke refresh tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="TOKENS_COMMAND"
    )
    listing = tokens.add_parser("list", help="id, account, client, created, last used, expiry")
    _config_option(listing)
    listing.add_argument("--account", help="only this account's tokens")
    revoke = tokens.add_parser("revoke", help="revoke refresh tokens at once, on every instance")
    _config_option(revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--account", help="every token of this account")
    which.add_argument("--id", help="the token with this id (from `tokens list`)")
    which.add_argument("--all", action="store_true", help="every token")


def _etcd_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    etcd = commands.add_parser("etcd", help="the registry's auth record in etcd").add_subparsers(
        dest="etcd_command", required=True, metavar="ETCD_COMMAND"
    )
    _config_option(etcd.add_parser("publish", help="write realm/issuer/service once and exit"))
    _config_option(etcd.add_parser("show", help="print the stored record; exit 1 if it differs"))


def _acl_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    acl = commands.add_parser("acl", help="check and explain the ACL policy").add_subparsers(
        dest="acl_command", required=True, metavar="ACL_COMMAND"
    )
    check = acl.add_parser("check", help="validate the ACL file; non-zero exit with the errors")
    explain = acl.add_parser("explain", help="show what a request gets, and which rules decide")
    for sub in (check, explain):
        _config_option(sub)
        sub.add_argument("--acl", type=Path, help="ACL file (overrides `acl`)")
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--account", help="the authenticated account")
    who.add_argument("--anonymous", action="store_true", help="an unauthenticated request")
    explain.add_argument(
        "--group", action="append", default=[], help="a group from the authentication backend"
    )
    explain.add_argument("--ip", help="the client address")
    explain.add_argument("--service", help="the service (default: `service` of the config)")
    explain.add_argument("--json", action="store_true", help="print JSON instead of text")
    explain.add_argument("scopes", nargs="+", metavar="SCOPE", help="e.g. repository:team/app:pull")


def _add_robots_parser(commands: Any) -> None:
    robots = commands.add_parser("robots", help="manage robot accounts").add_subparsers(
        dest="robots_command", required=True, metavar="ROBOTS_COMMAND"
    )
    create = robots.add_parser("create", help="create a robot; prints its secret once")
    create.add_argument("name", help=f"NAME (the account is {ROBOT_PREFIX}NAME)")
    create.add_argument("--groups", nargs="*", default=[], help="groups of the robot")
    create.add_argument("--expires", default="90d", help="90d, 12h, 30m or never (default 90d)")
    revoke = robots.add_parser("revoke", help="delete a robot; its secret stops working")
    revoke.add_argument("name")
    for sub in (create, revoke, robots.add_parser("list", help="list robots and expiry")):
        _config_option(sub)
        sub.add_argument("--robots-file", type=Path, help="robots file (overrides the config)")


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help=f"YAML config file (or ${CONFIG_ENV})")


def _users_options(parser: argparse.ArgumentParser) -> None:
    _config_option(parser)
    parser.add_argument("--htpasswd", type=Path, help="htpasswd file (overrides `htpasswd`)")


def run(argv: Sequence[str] | None, *, serve: Serve) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return _dispatch(args, serve)
    except RegistryAuthError as exc:
        print(f"registry-auth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, serve: Serve) -> int:
    if args.command == "serve":
        return _serve(args, serve)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "registry-config": _registry_config,
        "config-reference": lambda a: _config_reference(a.update),
        "keys": run_keys,
        "etcd": _etcd,
        "acl": _acl,
        "robots": _robots,
        "tokens": _tokens,
        "users": _users,
    }
    return commands[args.command](args)


def _registry_config(args: argparse.Namespace) -> int:
    print(registry_config_block(load_settings(args.config)), end="")
    return 0


def _tokens(args: argparse.Namespace) -> int:
    """The store holds only hashes: no command can print a refresh token."""
    tokens = refresh_tokens_from_settings(load_settings(args.config))
    try:
        if args.tokens_command == "list":
            _print_tokens(tokens.records(args.account))
            return 0
        records = tokens.records(None if args.all else args.account)
        if args.id is not None:
            records = [record for record in records if record.id == args.id]
            if not records:
                print(f"no refresh token with id {args.id}", file=sys.stderr)
                return 1
        count = tokens.revoke(records, "revoked with `registry-auth tokens revoke`")
        print(f"revoked {count} refresh token(s)")
        return 0
    finally:
        tokens.store.close()


def _print_tokens(records: list[RefreshRecord]) -> None:
    print(_LISTING_ROW.format("ID", "ACCOUNT", "CLIENT_ID", "CREATED", "LAST_USED", "EXPIRES"))
    for r in records:
        times = (rfc3339(t) for t in (r.created_at, r.last_used_at, r.expires_at))
        print(_LISTING_ROW.format(r.id, r.account, r.client_id, *times))


def _config_reference(update: Path | None) -> int:
    reference = render_reference()
    if update is None:
        print(reference, end="")
        return 0
    update.write_text(
        replace_block(update.read_text(encoding="utf-8"), reference), encoding="utf-8"
    )
    print(f"updated the configuration reference in {update}")
    return 0


def _embedded(args: argparse.Namespace) -> bool:
    return args.config is None and not os.environ.get(CONFIG_ENV)


def _workers(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a whole number >= 0 (0: one per core)")
    return int(text)


def _serve(args: argparse.Namespace, serve: Serve) -> int:
    settings = load_settings(args.config)
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    if _embedded(args):
        _prepare_development(settings)
    print(registry_config_block(settings), end="", flush=True)
    serve(settings, args.host, args.port)
    return 0


def _prepare_development(settings: Settings) -> None:
    """Without a config file: make a development key and an empty user file when missing."""
    print("registry-auth: no --config given: running on the embedded development defaults")
    if not has_keys(settings.keys_dir):
        key = generate_key(settings.keys_dir)
        print(f"registry-auth: generated development key {key.kid} in {settings.keys_dir}")
    if settings.htpasswd is not None and not settings.htpasswd.exists():
        settings.htpasswd.touch(mode=0o600)
        print(
            f"registry-auth: created empty {settings.htpasswd}; "
            "add users with `registry-auth users add NAME`"
        )


def registry_config_block(settings: Settings) -> str:
    """The `auth: token:` block for the registry's config.yml."""
    return (
        "# Paste into the registry's config.yml:\n"
        "auth:\n"
        "  token:\n"
        f'    realm: "{settings.realm}"\n'
        f'    service: "{settings.service}"\n'
        f'    issuer: "{settings.issuer}"\n'
        f'    rootcertbundle: "{bundle_path(settings.keys_dir).resolve()}"\n'
    )


def _etcd(args: argparse.Namespace) -> int:
    """`etcd publish` replaces a hand-run `etcdctl set`; `etcd show` checks what is there."""
    settings = load_settings(args.config)
    if settings.etcd is None:
        raise ConfigError("etcd", "not set in the config: nothing to publish to")
    backend = open_backend(settings.etcd)
    record = desired_record(settings)
    if args.etcd_command == "publish":
        outcome = Publisher(backend, record).publish()
        print(f"{backend.where}: {outcome.value}: {encode_record(record)}")
        return 0
    stored = backend.read().value
    print(f"{backend.where}: {describe(stored) if stored is None else stored}")
    if matches(stored, record):
        print("matches the config")
        return 0
    print(f"differs from the config, which wants: {encode_record(record)}")
    return 1


def _users(args: argparse.Namespace) -> int:
    path = _htpasswd_path(args)
    if args.users_command == "list":
        for account in list_accounts(path):
            print(account)
        return 0
    if args.users_command == "remove":
        remove_user(path, args.name)
        print(f"removed {args.name} from {path}")
        return 0
    created = set_user(path, args.name, _read_password(args.password_stdin))
    print(f"{'added' if created else 'changed password of'} {args.name} in {path}")
    return 0


def _htpasswd_path(args: argparse.Namespace) -> Path:
    if args.htpasswd is not None:
        return Path(args.htpasswd)
    settings = load_settings(args.config)
    for backend in settings.auth_backends or []:
        if isinstance(backend, HtpasswdBackend):
            return backend.path
    if settings.htpasswd is None:
        raise UserStoreError("no htpasswd file: set `htpasswd` in the config or pass --htpasswd")
    return settings.htpasswd


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise UserStoreError("the two passwords differ; nothing changed")
    else:
        raise UserStoreError("no terminal to ask for the password: use --password-stdin")
    if not password:
        raise UserStoreError("empty password refused")
    return password


def _acl(args: argparse.Namespace) -> int:
    """`acl check` / `acl explain`; an invalid policy prints every problem and exits 1."""
    settings = None if args.acl is not None and _embedded(args) else load_settings(args.config)
    path = args.acl if args.acl is not None else settings.acl if settings is not None else None
    if path is None:
        raise ConfigError("acl", "no ACL file: set `acl` in the config or pass --acl FILE")
    try:
        policy = load_policy(Path(path))
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"registry-auth: error: {problem}", file=sys.stderr)
        return 1
    if args.acl_command == "check":
        print(f"{path}: ok ({len(policy.rules)} rule(s), {len(policy.groups)} group(s))")
        return 0
    service = args.service or (settings.service if settings is not None else "")
    explanation = explain(policy, _explain_requester(args, service), parse_scopes(args.scopes))
    if args.json:
        print(json.dumps(explanation_data(explanation), indent=2))
    else:
        print(render_text(explanation), end="")
    return 0


def _explain_requester(args: argparse.Namespace, service: str) -> Requester:
    ip = None
    if args.ip is not None:
        try:
            ip = ip_address(args.ip)
        except ValueError:
            raise ConfigError("--ip", f"{args.ip!r} is not an IP address") from None
    account = None if args.anonymous else args.account
    return Requester(account, service, frozenset(args.group), ip)


def _robots(args: argparse.Namespace) -> int:
    path = _robots_path(args)
    if args.robots_command == "list":
        now = time.time()
        for robot in list_robots(path):
            state = "EXPIRED" if robot.expired(now) else "active"
            groups = ",".join(sorted(robot.groups))
            until = format_time(robot.expires) or "never"
            print(f"{robot.name}\t{state}\texpires={until}\tgroups={groups}")
        return 0
    if args.robots_command == "revoke":
        revoke_robot(path, args.name)
        print(f"revoked {robot_name(args.name)} in {path}", file=sys.stderr)
        return 0
    expires = parse_expiry(args.expires, time.time())
    robot, secret = create_robot(path, args.name, args.groups, expires)
    until = format_time(robot.expires) or "never"
    print(
        f"created {robot.name} in {path} (expires {until}); its secret, shown once:",
        file=sys.stderr,
    )
    print(secret)  # alone on stdout, so `SECRET=$(registry-auth robots create ci)` works
    return 0


def _robots_path(args: argparse.Namespace) -> Path:
    if args.robots_file is not None:
        return Path(args.robots_file)
    for backend in load_settings(args.config).auth_backends or []:
        if isinstance(backend, RobotsBackend):
            return backend.path
    raise UserStoreError(
        "no robots file: add `- type: robots` to auth_backends or pass --robots-file"
    )
