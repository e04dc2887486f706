"""What every command module shares: the --config option, the embedded-defaults test, the
`keys` subcommands' common options, delays written like 90s or 2h, the checks of a user or
robots file named on the command line, and reading --ip, --service and a password."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from app import CONFIG_ENV
from app.atomic import check_regular_file
from app.errors import ConfigError, RegistryAuthError, UserStoreError

if TYPE_CHECKING:
    from app.settings import Settings

# argparse's private type of `add_subparsers()`; a string so it is never subscripted at run time.
CommandGroup: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NOT_UTF8 = "the password is not UTF-8 text"
_MAX_DAYS = 365  # every delay ends in a sleep, which refuses ~292 years and more


TRAILING = "trailing_words"  # the list positional that words after the options go on to


def path_argument(text: str) -> Path:
    """A path option's value: an empty one (`--keys-dir ""`, an unset shell variable) is
    refused; taken as `.`, it made a key ring in the current directory."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path: give a file or directory")
    return Path(text)


def words_argument(parser: argparse.ArgumentParser, dest: str, **kwargs: object) -> None:
    """A list positional (SCOPE..., URL...) that may also follow the options: argparse fills
    positionals when it first meets them, so `check alice --ip X repository:a:pull` left the
    scope over as an unrecognized argument (app.cli.parse puts such words here)."""
    parser.add_argument(dest, **kwargs)  # type: ignore[arg-type]
    parser.set_defaults(**{TRAILING: dest})


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=path_argument, help=f"YAML config file (or ${CONFIG_ENV})")


def uses_embedded_defaults(args: argparse.Namespace) -> bool:
    """No config file named on the command line or in the environment."""
    return args.config is None and not os.environ.get(CONFIG_ENV)


def _missing_state_file(settings: Settings, args: argparse.Namespace) -> str | None:
    """Why there is nothing to read, when the SQLite state file the settings name does not
    exist: a server writes it at its first failed login or refresh token, and a command run
    on another config (or on the built-in defaults, without --config) would otherwise report
    "nothing on record" as if it had looked in the server's file. None when it exists (or the
    state is in etcd)."""
    if settings.state.backend != "sqlite" or Path(settings.state.path).exists():
        return None
    where = (
        "without --config this command reads the built-in defaults"
        if uses_embedded_defaults(args)
        else "is the config the server's?"
    )
    return f"{Path(settings.state.path).resolve()} does not exist ({where})"


def quiet_store_outage() -> None:
    """The store's outage warning is the server's (what it does meanwhile: counts in memory,
    503 to refresh grants); a command says the outage itself, in its one error line."""
    logging.getLogger("app.etcd.state").setLevel(logging.ERROR)


def answered_without_state(
    settings: Settings, args: argparse.Namespace, *, change: str | None, empty: str
) -> bool:
    """True when the state file is missing and that is the whole answer: `empty` and where it
    looked (to list or show), or a refusal (to `change` something: nothing was changed)."""
    missing = _missing_state_file(settings, args)
    if missing is None:
        return False
    if change is not None:
        raise ConfigError("state.path", f"nothing to {change}: {missing}")
    print(f"{empty}: {missing}")
    return True


def keys_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys-dir", type=path_argument, help="directory of the keys (overrides `keys_dir`)"
    )


def cacert_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cacert",
        type=path_argument,
        help="CA certificates for the registries' TLS (default: system's)",
    )


def keys_subcommand(keys: CommandGroup, name: str, text: str) -> argparse.ArgumentParser:
    """A `keys NAME` parser with --config and --keys-dir."""
    parser = keys.add_parser(name, help=text, description=text)
    config_option(parser)
    keys_dir_option(parser)
    return parser


def say(text: str) -> None:
    """A progress line, seen at once even when stdout is a pipe or a file."""
    print(text, flush=True)


def parse_duration(text: str, option: str = "--promote-after") -> int:
    """Seconds in `90`, `90s`, `10m`, `2h` or `1d` (at most a year); the error names `option`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise RegistryAuthError(f"{option} {text!r}: give a delay like 90s, 10m, 2h or 1d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > _MAX_DAYS * _UNITS["d"]:
        raise RegistryAuthError(f"{option} {text!r}: at most {_MAX_DAYS}d")
    return seconds


def user_file(path: Path, kind: str, *, create: bool, hint: str = "") -> Path:
    """An htpasswd or robots file (`kind`) a command edits. One to read must exist: a typo'd
    path is an error, not an empty file. One a command may create needs its directory, which
    is never made here (a typo'd directory would be made silently)."""
    check_regular_file(path, UserStoreError)
    if path.exists():
        return path
    if not create:
        raise UserStoreError(f"{kind} {path}: no such file{hint}")
    if not path.parent.is_dir():
        raise UserStoreError(f"cannot create {kind} {path}: no directory {path.parent}")
    return path


# A wildcard address is where a server listens, not one a client can connect to.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - binds nothing


def url_host(host: str) -> str:
    """`host` (from `listen`) as a URL names the server there: a wildcard as loopback, an IPv6
    address in brackets."""
    host = _WILDCARDS.get(host, host)
    return f"[{host}]" if ":" in host else host


def ip_option(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address given with --ip (`[::1]` as well as `::1`)."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise RegistryAuthError(f"--ip {text!r}: not an IP address") from None


def check_service_option(settings: Settings, service: str) -> None:
    """A --service this server issues tokens for."""
    if service not in settings.services:
        raise RegistryAuthError(
            f"--service {service!r}: this server issues no tokens for it (`service`, "
            "`extra_services`): its token endpoint answers such a request 400"
        )


# The longest a login's password may be: app.protocol.oauth.MAX_SECRET_LENGTH, not imported
# (it would load pydantic into `keys sync`, which this module serves too).
MAX_STDIN_PASSWORD = 4096


def read_password(from_stdin: bool, *, confirm: bool) -> str:
    """A password from stdin (all of it, as `docker login --password-stdin` reads it, one line
    break at the end dropped), or asked on the terminal (twice with `confirm`); maybe empty:
    the caller decides."""
    if from_stdin:
        try:
            # Typed on a terminal, Enter ends it; piped, all of it, at most a bound's worth
            # (`yes | ...` would otherwise fill the memory).
            text = (
                sys.stdin.readline()
                if sys.stdin.isatty()
                else sys.stdin.read(MAX_STDIN_PASSWORD + 3)
            )
        except UnicodeDecodeError:  # stdin decoded strictly (a locale other than C.UTF-8)
            raise RegistryAuthError(_NOT_UTF8) from None
        password = text.removesuffix("\n").removesuffix("\r")
        if len(password) > MAX_STDIN_PASSWORD:
            raise RegistryAuthError(
                f"--password-stdin: longer than {MAX_STDIN_PASSWORD} characters"
            )
        if "\n" in password or "\r" in password:
            # The first line alone was taken, without a word: not the password meant.
            raise RegistryAuthError(
                "--password-stdin: stdin holds more than one line; give the password alone"
            )
        return password
    if not sys.stdin.isatty():
        raise RegistryAuthError("no terminal to ask for the password: use --password-stdin")
    try:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password (again): ") != password:
            raise RegistryAuthError("the two passwords differ; nothing changed")
    except EOFError:  # Ctrl-D at the prompt
        print(file=sys.stderr)  # the prompt's line ends, as after Enter
        raise RegistryAuthError("no password given; nothing changed") from None
    return password


def read_new_password(from_stdin: bool) -> str:
    """A password to store (as a bcrypt hash): confirmed on the terminal, never empty, and UTF-8
    text (bcrypt hashes its UTF-8 bytes; bytes that are not UTF-8 arrive as lone surrogates,
    which have none)."""
    password = read_password(from_stdin, confirm=True)
    if not password:
        raise UserStoreError("empty password refused")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise UserStoreError(_NOT_UTF8) from None
    return password
