"""`registry-auth logins ...`: what the brute-force counters hold for an address (and an
account), and clearing them, so an operator can let a blocked CI runner in at once; and
`logins check`, a login tried as the server would try it (app.cli_login_check).

The store keeps hashes of names and addresses (app.state.attempts), so nothing can be listed:
the operator names the address, and the account for its own counter.
"""

from __future__ import annotations

import argparse
import time

from app.assembly import open_failure_store
from app.authn.ldap import directory_name_key
from app.backend_settings import LdapBackend
from app.cli_common import (
    answered_without_state,
    config_option,
    ip_option,
    quiet_store_outage,
    words_argument,
)
from app.errors import ConfigError
from app.protocol.tokens import rfc3339
from app.settings import Settings, load_settings
from app.state.attempts import (
    FailureCount,
    FailureStore,
    Verdict,
    counter_keys,
    judge,
    within_networks,
)


def add_commands(parser: argparse.ArgumentParser) -> None:
    logins = parser.add_subparsers(dest="logins_command", required=True, metavar="LOGINS_COMMAND")
    status = logins.add_parser(
        "status", help="failed logins on record for an address (and an account), and the verdict"
    )
    reset = logins.add_parser(
        "reset", help="forget them: the address's counter, or with --account that pair's only"
    )
    for sub in (status, reset):
        config_option(sub)
        sub.add_argument("--ip", required=True, help="the client address, as the audit log has it")
        sub.add_argument("--account", help="the account (its counter from that address)")
    check = logins.add_parser(
        "check",
        help="try a login through the backends as the server would, and what SCOPEs it would "
        "get (no token issued, nothing counted)",
    )
    config_option(check)
    check.add_argument("account", help="the name the client logs in with")
    words_argument(
        check,
        "scopes",
        nargs="*",
        metavar="SCOPE",
        help="what the client asks for: repository:team/app:pull,push",
    )
    check.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    check.add_argument("--service", help="the service asked for (default: `service`)")
    check.add_argument("--ip", help="the client's address (for `ip` rules and the webhooks)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.logins_command == "check":
        # Imported here: it builds every backend (LDAP, HTTP clients), which status and
        # reset do not need.
        from app import cli_login_check  # noqa: PLC0415

        return cli_login_check.run(settings, args)
    if not settings.brute_force.enabled:
        raise ConfigError("brute_force.enabled", "false: this server counts no failed logins")
    if settings.state.backend == "none":
        raise ConfigError("state.backend", "none: the counters live in each server's memory")
    address = _address(args.ip)
    change = "reset" if args.logins_command == "reset" else None
    if answered_without_state(settings, args, change=change, empty="no failed login on record"):
        return 0
    quiet_store_outage()
    store = open_failure_store(settings)
    try:
        if args.logins_command == "status":
            _print_status(settings, store, address, args.account)
        else:
            _reset(settings, store, address, args.account)
    finally:
        store.close()
    return 0


def _address(text: str) -> str:
    return str(ip_option(text))


def _counted_names(settings: Settings, account: str) -> list[str]:
    """The names the service may count `account` under: as typed, and as an LDAP directory
    compares names when an LDAP backend is configured (app.login, ThrottleNames)."""
    names = [account]
    if any(isinstance(b, LdapBackend) for b in settings.auth_backends or []):
        folded = directory_name_key(account)
        if folded != account:
            names.append(folded)
    return names


def _print_status(
    settings: Settings, store: FailureStore, address: str, account: str | None
) -> None:
    policy, now = settings.brute_force, time.time()
    ip_key = counter_keys("", address)[1]
    names = _counted_names(settings, account) if account is not None else []
    pair_keys = [counter_keys(name, address)[0] for name in names]
    found = store.failures([ip_key, *pair_keys], now, policy.window)  # one read
    ip = found.get(ip_key)
    if within_networks(tuple(policy.shared_networks), address):
        print(f"address {address}: shared (brute_force.shared_networks): counted per account")
    else:
        print(f"address {address}: {_describe(ip, judge(None, ip, policy, now), now)}")
    for name, pair_key in zip(names, pair_keys, strict=True):
        pair = found.get(pair_key)
        verdict = judge(pair, None, policy, now)
        print(f"account {name!r} from {address}: {_describe(pair, verdict, now)}")


def _describe(counter: FailureCount | None, verdict: Verdict, now: float) -> str:
    if counter is None:
        return "no failed login on record"
    text = f"{counter.count} failed login(s), the last at {rfc3339(int(counter.last_at))}"
    if verdict.retry_after is not None:
        return f"{text}: blocked (429) until {rfc3339(int(now) + verdict.retry_after)}"
    if verdict.delay > 0:
        return f"{text}: each attempt waits {verdict.delay:g} s"
    return f"{text}: not slowed yet"


def _reset(settings: Settings, store: FailureStore, address: str, account: str | None) -> None:
    if account is None:
        store.reset(counter_keys("", address)[1])
        print(
            f"forgot the failed logins from {address} (an account's own counter from there "
            "stays: reset it with --account)"
        )
        return
    for name in _counted_names(settings, account):
        store.reset(counter_keys(name, address)[0])
    print(f"forgot the failed logins of {account!r} from {address}")
