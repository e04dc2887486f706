"""The `registry-auth` command line: the parser, dispatch, serve and registry-config.

Each command group lives in its own app/cli_*.py module. Never imports the web layer: `serve`
is handed in by app.main.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app import __version__
from app.cli_acl import add_acl_commands, run_acl
from app.cli_common import config_option, uses_embedded_defaults
from app.cli_etcd import add_etcd_commands, run_etcd
from app.cli_keys import add_keys_commands, run_keys
from app.cli_keys_sync import add_keys_sync_command
from app.cli_registry import add_registry_check_command, run_registry_check
from app.cli_robots import add_robots_commands, run_robots
from app.cli_tokens import add_tokens_commands, run_tokens
from app.cli_users import add_users_commands, run_users
from app.config_reference import render_reference, replace_block
from app.errors import RegistryAuthError
from app.keys.store import bundle_path, generate_key, has_keys
from app.settings import Settings, load_settings

Serve = Callable[[Settings, str | None, int | None], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-auth", description="Token authorization server for Docker/OCI registries."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the token server")
    config_option(serve)
    serve.add_argument("--host", help="listen address (overrides `listen`)")
    serve.add_argument("--port", type=int, help="listen port (overrides `listen`)")
    serve.add_argument(
        "--workers",
        type=_workers,
        help="server processes (overrides `workers`; 0: one per CPU)",
    )

    block = commands.add_parser("registry-config", help="print the registry's auth: token: block")
    config_option(block)
    add_registry_check_command(commands)

    reference = commands.add_parser(
        "config-reference", help="print the configuration reference (Markdown)"
    )
    reference.add_argument(
        "--update", type=Path, metavar="FILE", help="rewrite the reference block inside FILE"
    )

    add_keys_sync_command(add_keys_commands(commands))

    add_users_commands(commands)
    add_etcd_commands(commands)
    add_acl_commands(commands)
    add_robots_commands(commands)
    add_tokens_commands(commands)
    return parser


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
        "registry-check": run_registry_check,
        "config-reference": lambda a: _config_reference(a.update),
        "keys": run_keys,
        "etcd": run_etcd,
        "acl": run_acl,
        "robots": run_robots,
        "tokens": run_tokens,
        "users": run_users,
    }
    # A subcommand that lives in a module of its own names its handler (set_defaults).
    handler: Callable[[argparse.Namespace], int] = (
        getattr(args, "handler", None) or commands[args.command]
    )
    return handler(args)


def _registry_config(args: argparse.Namespace) -> int:
    print(registry_config_block(load_settings(args.config)), end="")
    return 0


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


def _workers(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a whole number >= 0 (0: one per CPU)")
    return int(text)


def _serve(args: argparse.Namespace, serve: Serve) -> int:
    settings = load_settings(args.config)
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    if uses_embedded_defaults(args):
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
