"""`registry-auth robots ...`: robot accounts for CI; a secret is shown once."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from app.authn.base import check_groups
from app.authn.robot_store import create_robot, list_robots, parse_expiry, revoke_robot, robot_name
from app.authn.robots import Robot, format_time
from app.backend_settings import ROBOT_PREFIX, RobotsBackend
from app.cli_common import config_option, path_argument, user_file
from app.errors import RegistryAuthError, UserStoreError
from app.settings import load_settings

_NO_ROBOTS_YET = " (the first `registry-auth robots create` makes it)"


def add_commands(parser: argparse.ArgumentParser) -> None:
    robots = parser.add_subparsers(dest="robots_command", required=True, metavar="ROBOTS_COMMAND")
    create = robots.add_parser("create", help="create a robot; prints its secret once")
    # Optional here only so that a NAME swallowed by --groups gets a message saying so (run).
    create.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help=f"the robot's name (its account is {ROBOT_PREFIX}NAME)",
    )
    create.add_argument("--groups", nargs="*", default=[], help="groups of the robot")
    create.add_argument("--expires", default="90d", help="90d, 12h, 30m or never (default 90d)")
    revoke = robots.add_parser("revoke", help="delete a robot; its secret stops working")
    revoke.add_argument("name")
    for sub in (create, revoke, robots.add_parser("list", help="list robots and expiry")):
        config_option(sub)
        sub.add_argument(
            "--robots-file", type=path_argument, help="robots file (overrides the config)"
        )


def run(args: argparse.Namespace) -> int:
    creating = args.robots_command == "create"
    if creating:
        if args.name is None:
            raise RegistryAuthError(_missing_name(args.groups))
        check_groups(args.groups, "--groups")
    path = user_file(_robots_path(args), "robots file", create=creating, hint=_NO_ROBOTS_YET)
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
    shown: list[str] = []

    def show(robot: Robot, secret: str) -> None:
        _show_secret(robot, secret)
        shown.append(robot.name)

    try:
        robot, _ = create_robot(path, args.name, args.groups, expires, deliver=show)
    except RegistryAuthError as exc:
        if not shown:
            raise
        raise UserStoreError(f"{exc}; the secret shown above is void: nothing was saved") from None
    until = format_time(robot.expires) or "never"
    print(f"created {robot.name} in {path} (expires {until})", file=sys.stderr)
    return 0


def _show_secret(robot: Robot, secret: str) -> None:
    """The secret, alone on stdout (`SECRET=$(registry-auth robots create ci)`), written out
    before the robot is saved: a closed or full stdout saves nothing."""
    if sys.stdout is None:
        raise RegistryAuthError("stdout is closed: the secret would reach no one; nothing saved")
    print(f"{robot.name}'s secret, shown once:", file=sys.stderr)
    try:
        print(secret, flush=True)
    except OSError as exc:
        raise RegistryAuthError(
            f"cannot write the secret to stdout ({exc.strerror or exc}); nothing saved"
        ) from None


def _missing_name(groups: list[str]) -> str:
    """What to say when no NAME was given: most often --groups took it as one more group."""
    if len(groups) < 2:  # no last word to have been the name beside a group
        usage = " ".join(
            ["registry-auth robots create NAME", *(["--groups", *groups] if groups else [])]
        )
        return f"robots create: NAME is missing (`{usage}`)"
    *rest, last = groups
    return (
        f"robots create: NAME is missing: --groups takes every word after it, so {last!r} "
        f"became a group; write NAME before --groups "
        f"(`registry-auth robots create {last} --groups {' '.join(rest)}`)"
    )


def _robots_path(args: argparse.Namespace) -> Path:
    if args.robots_file is not None:
        return Path(args.robots_file)
    for backend in load_settings(args.config).auth_backends or []:
        if isinstance(backend, RobotsBackend):
            return backend.path
    raise UserStoreError(
        "no robots file: add `- type: robots` to auth_backends or pass --robots-file"
    )
