"""`serve`, and what an operator copies from the config: the registry's `auth: token:` block
(`registry-config`) and the configuration reference (`config-reference`). app.cli builds their
parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from app.cli_common import uses_embedded_defaults
from app.config_reference import render_reference, replace_block
from app.keys.store import bundle_path, generate_key, has_keys
from app.settings import Settings, load_settings

Serve = Callable[[Settings, str | None, int | None], None]


def run(args: argparse.Namespace, serve: Serve) -> int:
    if args.command == "serve":
        return _serve(args, serve)
    if args.command == "registry-config":
        print(registry_config_block(load_settings(args.config)), end="")
        return 0
    return _config_reference(args.update)


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
