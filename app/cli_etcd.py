"""`registry-auth etcd ...`: publish the registry's auth record once, or show it."""

from __future__ import annotations

import argparse

from app.cli_common import config_option
from app.errors import ConfigError
from app.etcd.backend import KeyBackend, open_backend
from app.etcd.publisher import Publisher
from app.etcd.record import describe, desired_record, encode_record, matches
from app.settings import load_settings


def add_commands(parser: argparse.ArgumentParser) -> None:
    etcd = parser.add_subparsers(dest="etcd_command", required=True, metavar="ETCD_COMMAND")
    config_option(etcd.add_parser("publish", help="write realm/issuer/service once and exit"))
    config_option(etcd.add_parser("show", help="print the stored record; exit 1 if it differs"))


def run(args: argparse.Namespace) -> int:
    """`etcd publish` replaces a hand-run `etcdctl set`; `etcd show` checks what is there."""
    settings = load_settings(args.config)
    if settings.etcd is None:
        raise ConfigError("etcd", "not set in the config: nothing to publish to")
    backend = open_backend(settings.etcd)
    try:
        return _publish_or_show(args.etcd_command, backend, desired_record(settings))
    finally:
        backend.close()


def _publish_or_show(command: str, backend: KeyBackend, record: dict[str, str]) -> int:
    if command == "publish":
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
