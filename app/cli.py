"""The `registry-auth` command line: the parser and dispatch.

Each command group lives in its own app/cli_*.py module (`serve`, `registry-config` and
`config-reference` in app.cli_server), imported only when that command runs: `--help` loads
none, and `keys sync` (a pod's sidecar, running for days) neither pydantic nor httpx. Never
imports the web layer: `serve` is handed in by app.main.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from app import LOG_FORMAT, QUIET_LOGGERS, __version__
from app.cli_common import TRAILING, config_option, path_argument
from app.errors import RegistryAuthError

if TYPE_CHECKING:
    from app.cli_server import Serve


class Group(NamedTuple):
    """A command (group) whose module fills its parser (`add_commands`) and runs it (`run`)."""

    module: str
    help: str


class GroupModule(Protocol):
    def add_commands(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


GROUPS: dict[str, Group] = {
    "registry-check": Group(
        "app.cli_registry",
        "ask registries whether they send clients here (realm, service) and which keys of the "
        "ring they trust: run it before `keys promote`",
    ),
    "keys": Group("app.cli_keys", "manage signing keys"),
    "users": Group("app.cli_users", "manage htpasswd users"),
    "etcd": Group("app.cli_etcd", "the registry's auth record in etcd"),
    "acl": Group("app.cli_acl", "check and explain the ACL policy"),
    "robots": Group("app.cli_robots", "manage robot accounts"),
    "tokens": Group("app.cli_tokens", "list and revoke refresh tokens"),
    "logins": Group(
        "app.cli_logins",
        "the brute-force counters of an address (and an account): show them, or reset "
        "them; check a login through the backends",
    ),
    "healthcheck": Group(
        "app.cli_health",
        "exit 0 when the service of this config answers /healthz (a container's HEALTHCHECK)",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, a group's module is loaded only if it is the
    group named (the others are listed, with their help, but not filled)."""
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

    reference = commands.add_parser(
        "config-reference", help="print the configuration reference (Markdown)"
    )
    reference.add_argument(
        "--update",
        type=path_argument,
        metavar="FILE",
        help="rewrite the reference block inside FILE",
    )

    for name, group in GROUPS.items():
        sub = commands.add_parser(name, help=group.help, description=group.help)
        if only is None or only == name:
            _module(group).add_commands(sub)
    _describe(parser, ())
    return parser


# What a command's exit status says, beyond "0 done, 2 an error" (one line, `error: ...`).
EXIT_STATUS = {
    ("registry-check",): "0 no problem found, 1 a problem (each is printed), 2 an error",
    ("acl", "check"): "0 the policy loads, 1 it does not (every problem is printed), 2 an error",
    ("acl", "explain"): "0 explained, 1 the policy does not load, 2 an error",
    ("logins", "check"): "0 accepted, 1 refused, 3 a backend or the authorization webhook "
    "unavailable, 2 an error",
    ("healthcheck",): "0 healthy, 1 not (no answer, or the config cannot be read), 2 an error",
    ("etcd", "show"): "0 the record is as this config would publish it, 1 it differs or is "
    "missing, 2 an error",
}


def _describe(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
    """Every subcommand's `--help` opens with what it does (its line in the list above it),
    and says its exit status where that is more than done or error."""
    if path in EXIT_STATUS:
        parser.epilog = f"exit status: {EXIT_STATUS[path]}"
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            if sub.description is None:
                sub.description = helps.get(name)
            _describe(sub, (*path, name))


def _module(group: Group) -> GroupModule:
    module: GroupModule = importlib.import_module(group.module)
    return module


def _named_command(argv: Sequence[str]) -> str:
    """The command word: the top level's options (-h, --version) take no value."""
    return next((word for word in argv if not word.startswith("-")), "")


def run(argv: Sequence[str] | None, *, serve: Serve) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(build_parser(only=_named_command(argv)), argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        status = _dispatch(args, serve)
        if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
            sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is then caught below
    except RegistryAuthError as exc:
        print(f"registry-auth: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Whoever read the output went away (`| head`): stop quietly, as the shell's commands
        # do. stdout goes to /dev/null so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command its pipe ended
    except OSError as exc:
        # The last resort for a file error that no module converted: still one line, naming
        # the file. Any other exception is a bug, and keeps its traceback.
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"registry-auth: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """parse_args, except that words after the options go on to a command's list positional
    (cli_common.words_argument): `logins check alice --ip X SCOPE` as well as `... alice SCOPE
    --ip X`."""
    args, extra = parser.parse_known_args(_joined_durations(argv))
    trailing = getattr(args, TRAILING, None)
    words = getattr(args, trailing, None) if trailing is not None else None
    if extra and words is not None and not any(word.startswith("-") for word in extra):
        words.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# A delay with its unit after an option (`--expires -5d`): argparse takes it for an option of
# its own ("expected one argument"). Joined as `--expires=-5d`, the option's own check says what
# a delay is. No option is spelt like that, so every option that takes a delay is covered.
_NEGATIVE_DELAY = re.compile(r"-\d+[a-z]+")


def _joined_durations(argv: Sequence[str]) -> list[str]:
    joined: list[str] = []
    for word in argv:
        if joined and joined[-1].startswith("--") and _NEGATIVE_DELAY.fullmatch(word):
            joined[-1] = f"{joined[-1]}={word}"
        else:
            joined.append(word)
    return joined


def _dispatch(args: argparse.Namespace, serve: Serve) -> int:
    if args.command in ("serve", "registry-config", "config-reference"):
        from app import cli_server  # noqa: PLC0415 - loads the settings, which not all commands need

        return cli_server.run(args, serve)
    # A subcommand that lives in a module of its own names its handler (set_defaults).
    handler: Callable[[argparse.Namespace], int] = (
        getattr(args, "handler", None) or _module(GROUPS[args.command]).run
    )
    return handler(args)


def _workers(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a whole number >= 0 (0: one per CPU)")
    return int(text)
