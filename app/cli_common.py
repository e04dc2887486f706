"""What every command module shares: the --config option and the embedded-defaults test."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypeAlias

from app.settings import CONFIG_ENV

# argparse's private type of `add_subparsers()`; a string so it is never subscripted at run time.
CommandGroup: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help=f"YAML config file (or ${CONFIG_ENV})")


def uses_embedded_defaults(args: argparse.Namespace) -> bool:
    """No config file named on the command line or in the environment."""
    return args.config is None and not os.environ.get(CONFIG_ENV)
