"""`registry-auth registry-check URL...`: does each registry send its clients here, and which
keys of the ring does it trust? (app.registry_check asks.) Exit status 1 on any problem."""

from __future__ import annotations

import argparse

from app.cli_common import cacert_option, config_option, keys_dir_option, words_argument
from app.keys.store import load_keyring, read_entries
from app.registry_check import check_registry, check_urls, registry_client, tls_verify
from app.settings import load_settings


def add_commands(check: argparse.ArgumentParser) -> None:
    config_option(check)
    keys_dir_option(check)
    cacert_option(check)
    words_argument(
        check,
        "urls",
        nargs="+",
        metavar="URL",
        help="a registry's base URL (https://registry.example.org)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    check_urls(args.urls)
    keys_dir = args.keys_dir or settings.keys_dir
    key_ring, entries = load_keyring(keys_dir), {e.kid: e for e in read_entries(keys_dir)}
    keys = [(key, entries[key.kid]) for key in key_ring.keys if key.kid in entries]
    problems = 0
    with registry_client(tls_verify(args.cacert)) as client:
        for url in args.urls:
            print(f"{url}:")
            for finding in check_registry(client, url, settings, keys):
                print(f"  {'ok     ' if finding.ok else 'problem'}  {finding.text}", flush=True)
                problems += not finding.ok
    if problems:
        print(f"{problems} problem(s)")
        return 1
    count = len(args.urls)
    print(f"no problem with the {count} registr{'y' if count == 1 else 'ies'} checked")
    return 0
