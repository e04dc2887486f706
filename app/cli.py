"""The `registry-auth` command line: serve, keys, users, registry-config, etcd.

Never imports the web layer: `serve` is handed in by app.main.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app.authn.users import list_accounts, remove_user, set_user
from app.config_reference import render_reference, replace_block
from app.errors import ConfigError, RegistryAuthError, UserStoreError
from app.etcd.backend import open_backend
from app.etcd.publisher import Publisher
from app.etcd.record import describe, desired_record, encode_record, matches
from app.keys.model import Algorithm
from app.keys.store import bundle_path, generate_key, has_keys
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

    block = commands.add_parser("registry-config", help="print the registry's auth: token: block")
    _config_option(block)

    reference = commands.add_parser(
        "config-reference", help="print the configuration reference (Markdown)"
    )
    reference.add_argument(
        "--update", type=Path, metavar="FILE", help="rewrite the reference block inside FILE"
    )

    keys = commands.add_parser("keys", help="manage signing keys").add_subparsers(
        dest="keys_command", required=True, metavar="KEYS_COMMAND"
    )
    generate = keys.add_parser("generate", help="create a signing key and rewrite bundle.pem")
    _config_option(generate)
    generate.add_argument(
        "--keys-dir", type=Path, help="directory of the keys (overrides `keys_dir`)"
    )
    generate.add_argument("--algorithm", choices=[a.value for a in Algorithm], default="RS256")
    generate.add_argument(
        "--days", type=int, default=365, help="certificate validity (default 365)"
    )

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
    if args.command == "registry-config":
        print(registry_config_block(load_settings(args.config)), end="")
        return 0
    if args.command == "config-reference":
        return _config_reference(args.update)
    if args.command == "keys":
        return _keys_generate(args)
    handlers = {"etcd": _etcd, "tokens": _tokens, "users": _users}
    return handlers[args.command](args)


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


def _serve(args: argparse.Namespace, serve: Serve) -> int:
    settings = load_settings(args.config)
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


def _keys_generate(args: argparse.Namespace) -> int:
    keys_dir = args.keys_dir or load_settings(args.config).keys_dir
    if args.days <= 0:
        raise UserStoreError("--days must be a positive number of days")
    key = generate_key(keys_dir, Algorithm(args.algorithm), days=args.days)
    print(f"generated {key.algorithm} key {key.kid} (active) in {keys_dir}")
    print(f"registry rootcertbundle: {bundle_path(keys_dir).resolve()}")
    print(key.kid)
    return 0


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
