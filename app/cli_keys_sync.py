"""`registry-auth keys sync`: keep a keys directory in step with a read-only copy of one (a
Kubernetes Secret volume), as the pod's init container (`--once`) and `keys-sync` container
do. app.keys.mirror does the copying."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from app.cli_common import CommandGroup, keys_subcommand, parse_duration, path_argument, say
from app.errors import KeyStoreError
from app.keys.mirror import copy_ring, follow


def add_keys_sync_command(keys: CommandGroup) -> None:
    sync = keys_subcommand(
        keys,
        "sync",
        "copy the key ring of a read-only directory (a Kubernetes Secret volume) into the keys "
        "directory, private keys 0600, and keep following it",
    )
    sync.add_argument(
        "--from",
        dest="source",
        type=path_argument,
        required=True,
        metavar="DIR",
        help="the keys to copy",
    )
    sync.add_argument("--once", action="store_true", help="copy once and exit (init container)")
    sync.add_argument(
        "--interval", default="10s", metavar="DELAY", help="how often to look (default 10s)"
    )
    sync.set_defaults(handler=run_keys_sync)


def run_keys_sync(args: argparse.Namespace, *, sleep: Callable[[float], None] = time.sleep) -> int:
    source: Path = args.source
    keys_dir: Path = args.keys_dir or _configured_keys_dir(args.config)
    interval = parse_duration(args.interval, "--interval")
    if interval < 1:
        raise KeyStoreError("--interval must be at least 1s")
    if source.resolve() == keys_dir.resolve():
        raise KeyStoreError(f"--from {source} is the keys directory itself")
    if args.once:
        print(copy_ring(source, keys_dir) or f"{keys_dir} already holds the key ring of {source}")
        return 0
    print(f"keeping {keys_dir} in step with {source}, looking every {interval} s", flush=True)
    with _exit_on_sigterm():
        follow(source, keys_dir, every=interval, sleep=sleep, say=say, warn=_warn)
    raise AssertionError("unreachable")  # pragma: no cover - follow() ends only by SIGTERM


def _configured_keys_dir(config: Path | None) -> Path:
    # Imported here: with --keys-dir (as the shipped pod runs it) the sidecar never loads
    # pydantic and the settings, half of its memory.
    from app.settings import load_settings  # noqa: PLC0415

    return load_settings(config).keys_dir


def _warn(text: str) -> None:
    print(f"registry-auth: error: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM (a pod stopping) ends the loop with status 0. A copy cut short leaves the old
    ring whole: keyring.json is replaced after the files it names."""

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
