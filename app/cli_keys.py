"""`registry-auth keys ...`: the key ring commands (generate, list, add, promote, retire, rotate,
jwks; sync lives in app.cli_keys_sync). Each step of a rotation is its own command, refused
with a reason when it is unsafe.

The settings (pydantic) and the registry client (httpx) are imported where they are used:
`keys sync --keys-dir`, a pod's sidecar for days, needs neither (~30 MiB instead of ~57)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app import CONFIG_ENV
from app.cli_common import TRAILING, cacert_option, parse_duration, path_argument, say
from app.cli_common import keys_subcommand as _sub
from app.cli_keys_sync import add_keys_sync_command
from app.errors import KeyStoreError, RotationRefusedError
from app.keys import ring
from app.keys.certs import MAX_CERT_DAYS
from app.keys.jwks import KidFormat, jwks_document
from app.keys.model import Algorithm, KeyState, SigningKey
from app.keys.ring import Entries, RingEntry
from app.keys.store import (
    RecordedKey,
    add_key,
    bundle_path,
    check_keys,
    generate_key,
    has_keys,
    load_keyring,
    lost_keys,
    read_entries,
    recorded_keys,
    update_ring,
    write_public_file,
)

if TYPE_CHECKING:
    from app.settings import Settings

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


def add_commands(parser: argparse.ArgumentParser) -> None:
    keys = parser.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    generate = _sub(keys, "generate", "create the first signing key (active at once)")
    _new_key_options(generate, "RS256")
    generate.add_argument(
        "--force", action="store_true", help="replace the active key at once (key compromise)"
    )
    _sub(keys, "list", "show every key: kid, algorithm, state, created, certificate expiry")
    _new_key_options(_sub(keys, "add", "add a `next` key: published in bundle.pem, not signing"))
    _sub(keys, "promote", "make KID the signing key; the old one becomes retiring").add_argument(
        "kid"
    )
    retire = _sub(keys, "retire", "remove a retiring (or next) key from the ring and bundle")
    retire.add_argument("kid")
    retire.add_argument(
        "--force", action="store_true", help="even while tokens it signed may still be valid"
    )
    rotate = _sub(keys, "rotate", "add a key and print the next steps (or promote it later)")
    _new_key_options(rotate)
    when = rotate.add_mutually_exclusive_group()
    when.add_argument(
        "--promote-after",
        metavar="DELAY",
        help="wait DELAY (e.g. 90s, 10m, 2h), then promote: for automation that ships the "
        "bundle and restarts registries meanwhile",
    )
    when.add_argument(
        "--promote-when-trusted",
        nargs="+",
        metavar="URL",
        help="promote once every registry at these URLs trusts the new key (see registry-check)",
    )
    # Its URLs may also follow the other options (app.cli.parse), as registry-check's may.
    rotate.set_defaults(**{TRAILING: "promote_when_trusted"})
    rotate.add_argument(
        "--check-every",
        metavar="DELAY",
        help="with --promote-when-trusted: how often to ask (default 10s)",
    )
    rotate.add_argument(
        "--give-up-after",
        metavar="DELAY",
        help="with --promote-when-trusted: then exit 2, the key still next (default 1h)",
    )
    cacert_option(rotate)
    jwks = _sub(keys, "jwks", "write a JWKS of the published keys (registry 3.x `jwks:`)")
    jwks.add_argument("--kid-format", choices=[f.value for f in KidFormat], default="libtrust")
    jwks.add_argument(
        "--output",
        type=path_argument,
        help="file to write (default KEYS_DIR/jwks.json, the file registries are given; "
        "- for stdout); required with --kid-format rfc7638",
    )
    add_keys_sync_command(keys)


def _new_key_options(parser: argparse.ArgumentParser, algorithm: str | None = None) -> None:
    """--algorithm (default `algorithm`; none: the active key's) and --days."""
    parser.add_argument(
        "--algorithm",
        choices=[a.value for a in Algorithm],
        default=algorithm,
        help=f"default: {algorithm or 'the algorithm of the active key'}",
    )
    parser.add_argument("--days", type=int, default=365, help="certificate validity (default 365)")


def run(args: argparse.Namespace, *, clock: Clock | None = None, sleep: Sleep = time.sleep) -> int:
    """Run one `keys` command; RegistryAuthError (refusals included) goes to the caller."""
    keys_dir: Path = args.keys_dir or _settings(args).keys_dir
    if not 0 < getattr(args, "days", 1) <= MAX_CERT_DAYS:
        raise KeyStoreError(f"--days must be a number of days from 1 to {MAX_CERT_DAYS}")
    if args.keys_command != "generate":
        _require_ring(args, keys_dir)
    with _naming_the_ring(keys_dir, args):
        return _COMMANDS[args.keys_command](args, keys_dir, clock or _utcnow, sleep)


def _again(args: argparse.Namespace) -> str:
    """The --config and --keys-dir this command was given, as absolute paths, for the commands
    it prints: without them, or from another directory, those would act on another ring."""
    given = (("--config", args.config), ("--keys-dir", args.keys_dir))
    return "".join(
        f" {option} {shlex.quote(str(Path(value).absolute()))}"
        for option, value in given
        if value is not None
    )


def _require_ring(args: argparse.Namespace, keys_dir: Path) -> None:
    # Before anything else: promote and retire took the writers' lock (making the directory)
    # and list said `cannot read keys/keyring.json`, none of them where they had looked.
    if not has_keys(keys_dir):
        raise KeyStoreError(
            f"no key ring in {keys_dir.absolute()}: run `registry-auth keys generate"
            f"{_again(args)}` first, or give the --config or --keys-dir of the ring"
        )


@contextlib.contextmanager
def _naming_the_ring(keys_dir: Path, args: argparse.Namespace) -> Iterator[None]:
    """A refused step names the ring it was refused in (`no key 'X' in the ring`, run from
    the wrong directory, did not), and the commands it suggests the options that name it."""
    try:
        yield
    except RotationRefusedError as exc:
        again = _again(args)
        options = f" (each with{again})" if again and "`registry-auth keys " in str(exc) else ""
        raise RotationRefusedError(f"{keys_dir.absolute()}: {exc}{options}") from None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _cmd_generate(args: argparse.Namespace, keys_dir: Path, now: Clock, _: Sleep) -> int:
    return _generate(args, keys_dir, now)


def _cmd_list(args: argparse.Namespace, keys_dir: Path, now: Clock, _: Sleep) -> int:
    # A retiring key's "retire after" is judged on the wait: said on what, as `retire` does.
    retiring = any(key.state is KeyState.RETIRING for key in recorded_keys(keys_dir))
    return _list(keys_dir, _window(args, warn=retiring), now())


def _cmd_add(args: argparse.Namespace, keys_dir: Path, now: Clock, _: Sleep) -> int:
    _ring_the_service_loads(keys_dir)
    _print_added(add_key(keys_dir, _algorithm(args, keys_dir), days=args.days, clock=now), args)
    return 0


def _cmd_promote(args: argparse.Namespace, keys_dir: Path, now: Clock, _: Sleep) -> int:
    # Else it goes on signing with the old key. The keys whose files are gone leave the ring
    # with this step (the active one among them, when it is the one lost).
    _ring_the_service_loads(keys_dir, but_lost=True)
    # Refusals that need no wait come before the warning about the wait (which then misled).
    target = ring.find(recorded_keys(keys_dir), args.kid)
    if target.missing:
        raise RotationRefusedError(f"key {target.kid} cannot sign: its {target.describe_loss()}")
    if target.state is KeyState.ACTIVE:
        raise ring.already_active(target.kid)
    return _promote(keys_dir, args.kid, _window(args), now(), args)


def _cmd_retire(args: argparse.Namespace, keys_dir: Path, now: Clock, _: Sleep) -> int:
    target = ring.find(recorded_keys(keys_dir), args.kid)
    if target.state is KeyState.ACTIVE and not target.missing:
        raise ring.retiring_active(target.kid)
    return _retire(keys_dir, args.kid, _window(args), now(), force=args.force)


def _cmd_jwks(args: argparse.Namespace, keys_dir: Path, _now: Clock, _: Sleep) -> int:
    return _jwks(keys_dir, KidFormat(args.kid_format), args.output)


def _window(args: argparse.Namespace, *, warn: bool = True) -> ring.TokenWindow:
    window = ring.TokenWindow.of(_settings(args))
    if warn and args.config is None and not os.environ.get(CONFIG_ENV):
        # `--keys-dir` alone: the service's config may set a longer TTL or a propagation time
        # (LAIN: 1800 s tokens), and a retire judged on the defaults comes too early.
        print(
            f"registry-auth: warning: no --config: the wait uses {window.explain()} (the "
            "built-in values and REGISTRY_AUTH_* variables); give the service's config if it "
            "sets token_ttl, key_propagation or reload_interval",
            file=sys.stderr,
        )
    return window


def _settings(args: argparse.Namespace) -> Settings:
    """The config, read once per command (the key directory, the token window and the
    registry wait each need it)."""
    loaded: Settings | None = getattr(args, "loaded_settings", None)
    if loaded is None:
        from app.settings import load_settings  # noqa: PLC0415 - see the module's docstring

        loaded = args.loaded_settings = load_settings(args.config)
    return loaded


def _generate(args: argparse.Namespace, keys_dir: Path, now: Clock) -> int:
    if has_keys(keys_dir) and not args.force:
        raise RotationRefusedError(
            "it already has a key ring: a new active key would make registries reject "
            "every token until they load a new bundle. Rotate with `keys rotate` (or pass "
            "--force to replace the active key at once, e.g. after a key compromise)"
        )
    lost = lost_keys(keys_dir)
    key = generate_key(keys_dir, Algorithm(args.algorithm), days=args.days, clock=now)
    _print_dropped(lost)
    print(f"generated {key.algorithm} key {key.kid} (active) in {keys_dir}")
    print(f"registry rootcertbundle: {bundle_path(keys_dir).resolve()}")
    print(key.kid)
    return 0


def _list(keys_dir: Path, window: ring.TokenWindow, now: datetime) -> int:
    recorded = recorded_keys(keys_dir)
    lost = {key.id for key in recorded if key.missing}
    entries = {entry.id: entry for entry in read_entries(keys_dir, without=lost)}
    print(f"{'KID':<59} {'ALG':<5} {'STATE':<8} {'CREATED':<20} {'CERT EXPIRES':<20} NOTE")
    for key in recorded:
        row = f"{key.kid:<59} {key.algorithm.value:<5} {key.state.value:<8} {_when(key.created)}"
        if key.id in lost:
            print(f"{row} {'-':<19} FILES LOST: its {key.describe_loss()}")
        else:
            entry = entries[key.id]
            print(f"{row} {_when(entry.not_after)} {_note(entry, window, now)}")
    # The table comes from keyring.json alone; the service also loads every key file.
    _ring_the_service_loads(keys_dir)
    return 0


def _ring_the_service_loads(keys_dir: Path, *, but_lost: bool = False) -> None:
    """KeyStoreError when `serve` would refuse the ring (a key file gone, unreadable, 0644):
    a rotation started on such a ring would only hide what is wrong with it. With `but_lost`,
    the keys whose files are gone do not count: the step about to be taken drops them."""
    if not has_keys(keys_dir):
        return  # run() refused a directory without a ring; generate makes one
    lost = lost_keys(keys_dir)
    try:
        if but_lost and lost:
            check_keys(keys_dir, without={key.id for key in lost})
        else:
            load_keyring(keys_dir)
    except KeyStoreError as exc:
        hint = ""
        if lost:  # what takes them out of the ring
            hint = (
                " (a key whose files are gone leaves the ring with `registry-auth keys retire "
                "KID`; the active key with `registry-auth keys promote NEXT-KID` or "
                "`registry-auth keys generate --force`)"
            )
        raise KeyStoreError(f"the service would refuse this key ring: {exc}{hint}") from None


def _print_dropped(lost: Iterable[RecordedKey]) -> None:
    for key in lost:
        print(f"dropped key {key.kid} from the ring: its {key.describe_loss()}")


def _note(entry: RingEntry, window: ring.TokenWindow, now: datetime) -> str:
    if entry.not_after <= now:
        return "CERTIFICATE EXPIRED"
    if entry.not_before > now:
        return f"CERTIFICATE NOT VALID BEFORE {entry.not_before:%Y-%m-%d %H:%M:%S}Z"
    if entry.state is KeyState.NEXT:
        return "ship bundle.pem to every registry, restart them, then promote"
    safe_at = ring.retire_after(entry, window)
    if entry.state is KeyState.RETIRING and safe_at is not None:
        return "can be retired now" if now >= safe_at else f"retire after {_when(safe_at)}"
    return ""


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _algorithm(args: argparse.Namespace, keys_dir: Path) -> Algorithm:
    """--algorithm, else the active key's: a rotation keeps the ring's algorithm (an ES256 ring
    got an RS256 key, a choice nobody made, the moment it was promoted)."""
    if args.algorithm is not None:
        return Algorithm(args.algorithm)
    return next(e.algorithm for e in read_entries(keys_dir) if e.state is KeyState.ACTIVE)


def _print_added(entry: RingEntry, args: argparse.Namespace, *, promoting: bool = False) -> None:
    print(f"added {entry.algorithm} key {entry.kid} as next: published, not signing yet")
    ship = "ship bundle.pem (and jwks.json for registry 3.x) to every registry; restart them"
    if promoting:  # rotate --promote-after/--promote-when-trusted: no promote to run by hand
        print(f"meanwhile: {ship}")
    else:
        print("next steps:")
        print(f"  1. {ship}")
        print(f"  2. registry-auth keys promote {entry.kid}{_again(args)}")
    print(entry.kid)


def _promote(
    keys_dir: Path, kid: str, window: ring.TokenWindow, now: datetime, args: argparse.Namespace
) -> int:
    lost = lost_keys(keys_dir)
    entries = update_ring(keys_dir, lambda current: ring.promote(current, kid, now), drop_lost=True)
    _print_dropped(lost)
    _print_promoted(entries, window, args)
    return 0


def _print_promoted(entries: Entries, window: ring.TokenWindow, args: argparse.Namespace) -> None:
    active = next(entry for entry in entries if entry.state is KeyState.ACTIVE)
    within = f"{window.propagation + window.reload} s"
    print(f"key {active.kid} is active: every running instance signs with it within {within}")
    print("(it is already in every registry's bundle, if you shipped it after `add`)")
    for entry in entries:
        safe_at = ring.retire_after(entry, window)
        if entry.state is KeyState.RETIRING and safe_at is not None:
            print(f"key {entry.kid} is retiring: after {_when(safe_at)} UTC run")
            print(f"  registry-auth keys retire {entry.kid}{_again(args)}")
    print(active.kid)


def _retire(
    keys_dir: Path, kid: str, window: ring.TokenWindow, now: datetime, *, force: bool
) -> int:
    target = ring.find(recorded_keys(keys_dir), kid)
    lost = lost_keys(keys_dir)

    def retire(current: Entries) -> Entries:
        if target.missing:  # dropped already, with the other lost keys
            return current
        return ring.retire(current, kid, now, window=window, force=force)

    update_ring(keys_dir, retire, drop_lost=True)
    _print_dropped(key for key in lost if key.id != target.id)
    print(f"retired key {target.kid}: removed from the ring, bundle.pem and jwks.json")
    if force and target.state is KeyState.RETIRING:
        print("forced: clients holding its tokens get 401 once registries load the new bundle")
    print("next step: ship bundle.pem (and jwks.json) to every registry and restart them")
    return 0


# The least --promote-after: shipping a bundle and restarting registries takes longer.
MIN_PROMOTE_AFTER = 60


def _rotate(args: argparse.Namespace, keys_dir: Path, now: Clock, sleep: Sleep) -> int:
    # Every option, and the config the promotion reads, is checked before the key is added: a
    # refusal must leave the ring as it was.
    delay = parse_duration(args.promote_after) if args.promote_after is not None else None
    if delay is not None and delay < MIN_PROMOTE_AFTER:
        raise KeyStoreError(
            f"--promote-after {args.promote_after}: at least {MIN_PROMOTE_AFTER // 60}m, the "
            "registries need the new bundle before the key signs (to promote at once anyway: "
            "`registry-auth keys promote KID`)"
        )
    if not args.promote_when_trusted:
        alone = [
            option
            for option, value in (
                ("--check-every", args.check_every),
                ("--give-up-after", args.give_up_after),
                ("--cacert", args.cacert),
            )
            if value is not None
        ]
        if alone:
            raise KeyStoreError(f"{', '.join(alone)}: only with --promote-when-trusted")
    wait = _trust_wait(args) if args.promote_when_trusted else None
    window = _window(args) if delay is not None or wait is not None else None
    _ring_the_service_loads(keys_dir)
    entry = add_key(keys_dir, _algorithm(args, keys_dir), days=args.days, clock=now)
    _print_added(entry, args, promoting=window is not None)
    try:
        with _sigterm_as_interrupt():
            if delay is not None:
                print(f"promoting {entry.kid} in {delay} s", flush=True)
                sleep(delay)
            elif wait is not None:
                wait(next(k for k in load_keyring(keys_dir).keys if k.kid == entry.kid), sleep)
    except KeyboardInterrupt:
        # Interrupted while waiting: the key was added, and stays next.
        print(
            f"registry-auth: interrupted: key {entry.kid} stays next (published, not signing); "
            f"promote it when every registry trusts it: registry-auth keys promote "
            f"{entry.kid}{_again(args)}",
            file=sys.stderr,
        )
        raise
    if window is None:
        return 0
    return _promote(keys_dir, entry.kid, window, now(), args)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While rotate waits, SIGTERM (a CI job's or systemd's timeout) ends it as Ctrl-C does:
    saying that the key stays next and how to promote it, instead of nothing at all."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _trust_wait(args: argparse.Namespace) -> Callable[[SigningKey, Sleep], None]:
    """--promote-when-trusted: every option checked now, a wait for the new key."""
    from app import registry_check as check  # noqa: PLC0415 - see the module's docstring

    urls: list[str] = args.promote_when_trusted
    check.check_urls(urls)
    every = parse_duration(args.check_every or "10s", "--check-every")
    give_up = parse_duration(args.give_up_after or "1h", "--give-up-after")
    if every < 1:
        raise KeyStoreError("--check-every must be at least 1s")
    settings, verify = _settings(args), check.tls_verify(args.cacert)

    def wait(key: SigningKey, sleep: Sleep) -> None:
        with check.registry_client(verify) as client:
            check.wait_until_trusted(
                client, urls, settings, key, every=every, give_up_after=give_up, sleep=sleep,
                say=say, options=_again(args),
            )  # fmt: skip

    return wait


_COMMANDS: dict[str, Callable[[argparse.Namespace, Path, Clock, Sleep], int]] = {
    "generate": _cmd_generate,
    "list": _cmd_list,
    "add": _cmd_add,
    "promote": _cmd_promote,
    "retire": _cmd_retire,
    "rotate": _rotate,
    "jwks": _cmd_jwks,
}


def _jwks(keys_dir: Path, kid_format: KidFormat, output: Path | None) -> int:
    if output is None and kid_format is not KidFormat.LIBTRUST:
        # KEYS_DIR/jwks.json is what registries are given; its kids must be the tokens'.
        raise KeyStoreError(
            f"--kid-format {kid_format.value} needs --output FILE (or - for stdout): "
            f"{keys_dir / 'jwks.json'} is the file registries are given, and its kids must "
            "be the libtrust kids the tokens carry"
        )
    document = jwks_document((entry.certificate for entry in read_entries(keys_dir)), kid_format)
    text = json.dumps(document, indent=2) + "\n"
    if output == Path("-"):
        sys.stdout.write(text)
        return 0
    path = write_public_file(output or keys_dir / "jwks.json", text)
    print(f"wrote {len(document['keys'])} key(s) with {kid_format.value} kids to {path}")
    return 0
