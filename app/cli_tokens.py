"""`registry-auth tokens ...`: list and revoke refresh tokens (never printing one)."""

from __future__ import annotations

import argparse
import sys

from app.assembly import refresh_tokens_from_settings
from app.cli_common import answered_without_state, config_option, quiet_store_outage
from app.errors import ConfigError, StateStoreError
from app.protocol.tokens import rfc3339
from app.settings import load_settings
from app.state.model import RefreshRecord

_LISTING_ROW = "{:<16}  {:<15}  {:<15}  {:<20}  {:<20}  {}"


def add_commands(parser: argparse.ArgumentParser) -> None:
    tokens = parser.add_subparsers(dest="tokens_command", required=True, metavar="TOKENS_COMMAND")
    listing = tokens.add_parser("list", help="id, account, client, created, last used, expiry")
    config_option(listing)
    listing.add_argument("--account", help="only this account's tokens")
    revoke = tokens.add_parser("revoke", help="revoke refresh tokens at once, on every instance")
    config_option(revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--account", help="every token of this account")
    which.add_argument("--id", help="the token with this id (from `tokens list`)")
    which.add_argument("--all", action="store_true", help="every token")


def run(args: argparse.Namespace) -> int:
    """The store holds only hashes: no command can print a refresh token."""
    settings = load_settings(args.config)
    quiet_store_outage()
    tokens = refresh_tokens_from_settings(settings)
    if tokens is None:
        raise ConfigError("state.backend", "none: this server keeps no refresh tokens")
    try:
        change = "revoke" if args.tokens_command == "revoke" else None
        if answered_without_state(settings, args, change=change, empty="no refresh tokens"):
            return 0
        if args.tokens_command == "list":
            _print_tokens(tokens.records(args.account))
            return 0
        records = tokens.records(None if args.all else args.account)
        if args.id is not None:
            records = [record for record in records if record.id == args.id]
            if not records:
                raise StateStoreError(f"no refresh token with id {args.id!r}")
        count = tokens.revoke(records, "revoked with `registry-auth tokens revoke`")
        print(f"revoked {count} refresh token(s)")
        if not records and args.account is not None:  # still 0: revoking twice is no error
            print(
                f"registry-auth: account {args.account!r} has no refresh token (none issued, "
                "all revoked already, or a misspelt name: `tokens list` shows who has some)",
                file=sys.stderr,
            )
        return 0
    finally:
        tokens.store.close()


def _print_tokens(records: list[RefreshRecord]) -> None:
    print(_LISTING_ROW.format("ID", "ACCOUNT", "CLIENT_ID", "CREATED", "LAST_USED", "EXPIRES"))
    for r in records:
        times = (rfc3339(t) for t in (r.created_at, r.last_used_at, r.expires_at))
        print(_LISTING_ROW.format(r.id, r.account, r.client_id, *times))
