"""`registry-auth acl ...`: validate a policy, and explain what a request would get."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.authz.base import Requester
from app.authz.default import default_policy
from app.authz.engine import explain
from app.authz.files import load_policy
from app.authz.report import explanation_data, render_text
from app.cli_common import (
    check_service_option,
    config_option,
    ip_option,
    path_argument,
    uses_embedded_defaults,
    words_argument,
)
from app.errors import ConfigError, PolicyError, RegistryAuthError
from app.protocol.scopes import parse_scopes
from app.settings import load_settings


def add_commands(parser: argparse.ArgumentParser) -> None:
    acl = parser.add_subparsers(dest="acl_command", required=True, metavar="ACL_COMMAND")
    check = acl.add_parser("check", help="validate the ACL file; non-zero exit with the errors")
    explain = acl.add_parser("explain", help="show what a request gets, and which rules decide")
    for sub in (check, explain):
        config_option(sub)
        sub.add_argument("--acl", type=path_argument, help="ACL file (overrides `acl`)")
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--account", help="the authenticated account")
    who.add_argument("--anonymous", action="store_true", help="an unauthenticated request")
    explain.add_argument(
        "--group", action="append", default=[], help="a group from the authentication backend"
    )
    explain.add_argument("--ip", help="the client address")
    explain.add_argument("--service", help="the service (default: `service` of the config)")
    explain.add_argument("--json", action="store_true", help="print JSON instead of text")
    words_argument(
        explain, "scopes", nargs="+", metavar="SCOPE", help="e.g. repository:team/app:pull"
    )


def run(args: argparse.Namespace) -> int:
    """`acl check` / `acl explain`; an invalid policy prints every problem and exits 1."""
    settings = (
        None
        if args.acl is not None and uses_embedded_defaults(args)
        else load_settings(args.config)
    )
    path = args.acl if args.acl is not None else settings.acl if settings is not None else None
    if path is None and args.acl_command == "check":
        raise ConfigError(
            "acl",
            "no ACL file: set `acl` in the config or pass --acl FILE (without one the built-in "
            "default applies: `acl explain` shows it)",
        )
    try:
        # Without an ACL the server applies the built-in default: explain that.
        policy = load_policy(Path(path)) if path is not None else default_policy()
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"registry-auth: error: {problem}", file=sys.stderr)
        return 1
    if args.acl_command == "check":
        print(f"{path}: ok ({len(policy.rules)} rule(s), {len(policy.groups)} group(s))")
        return 0
    service = args.service or (settings.service if settings is not None else "")
    if settings is not None:
        check_service_option(settings, service)
    explanation = explain(policy, _explain_requester(args, service), parse_scopes(args.scopes))
    hook = settings.authz_webhook if settings is not None else None
    if args.json:
        data = explanation_data(explanation)
        if hook is not None:
            data["narrowed_by_authz_webhook"] = hook.name
        print(json.dumps(data, indent=2))
    else:
        print(render_text(explanation), end="")
        if hook is not None:
            print(
                f"then the authorization webhook {hook.name!r} ({hook.url}) narrows this "
                "further: not asked here"
            )
    return 0


def _explain_requester(args: argparse.Namespace, service: str) -> Requester:
    """The request as the server would see it; one it can never see is refused, or the
    explanation would grant what the server does not."""
    if args.anonymous and args.group:
        raise RegistryAuthError(
            "--group with --anonymous: an unauthenticated request has no groups"
        )
    if not args.anonymous and not args.account:
        raise RegistryAuthError("--account is empty: the server refuses an empty account (401)")
    ip = ip_option(args.ip) if args.ip is not None else None
    account = None if args.anonymous else args.account
    return Requester(account, service, frozenset(args.group), ip)
