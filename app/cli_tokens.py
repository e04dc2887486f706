"""`registry-auth tokens ...`: list and revoke refresh tokens (never printing one)."""

from __future__ import annotations

import argparse
import sys
import time

from app.assembly import refresh_tokens_from_settings
from app.cli_common import answered_without_state, config_option, quiet_store_outage
from app.errors import ConfigError, StateStoreError
from app.protocol.tokens import rfc3339
from app.settings import load_settings
from app.state.model import RefreshRecord
from app.state.refresh import RefreshTokens

_LISTING_ROW = "{:<16}  {:<15}  {:<15}  {:<20}  {:<20}  {:<20}  {}"


def add_commands(parser: argparse.ArgumentParser) -> None:
    tokens = parser.add_subparsers(dest="tokens_command", required=True, metavar="TOKENS_COMMAND")
    listing = tokens.add_parser(
        "list", help="id, account, client, created, last used, expiry, and whether it still works"
    )
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
            _print_tokens(tokens, tokens.records(args.account), int(time.time()))
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


def _print_tokens(tokens: RefreshTokens, records: list[RefreshRecord], now: int) -> None:
    """EXPIRES is when the token dies unless used again: the end of its lifetime, or the idle
    timeout after its last use, whichever comes first (the lifetime's end alone showed a token
    dead of idleness as good for months). STATE says whether it still works by these times;
    an account removed or a password changed since shows only at the token's next use."""
    print(
        _LISTING_ROW.format(
            "ID", "ACCOUNT", "CLIENT_ID", "CREATED", "LAST_USED", "EXPIRES", "STATE"
        )
    )
    idle = tokens.policy.idle_timeout
    for r in records:
        ends = min(r.expires_at, r.last_used_at + idle)
        times = (rfc3339(t) for t in (r.created_at, r.last_used_at, ends))
        state = "live" if tokens.expiry_problem(r, now) is None else "dead"
        print(_LISTING_ROW.format(r.id, r.account, r.client_id, *times, state))
