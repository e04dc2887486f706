"""`registry-auth keys ...` as an operator types it: output, exit codes, refusals that say why
and what to do. A fixed clock drives the retire wait; no sleeping."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app import reload
from app.cli import build_parser, parse
from app.cli_common import parse_duration
from app.cli_keys import run as run_keys
from app.errors import KeyStoreError, RegistryAuthError, RotationRefusedError
from app.keys.model import KeyState
from app.keys.store import read_entries
from app.main import main

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = (
    "issuer: t\nservice: registry.test\nrealm: http://127.0.0.1:5001/token\n"
    "keys_dir: keys\ntoken_ttl: 30\n"
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def _settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retire wait as it ships: reload_interval (2 s) and a second to settle."""
    monkeypatch.setattr(reload, "SETTLE_SECONDS", 1.0)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "registry-auth.yaml"
    path.write_text(CONFIG)
    return path


def keys(config: Path, *argv: str, clock: Clock | None = None, sleep: object = None) -> int:
    args = build_parser().parse_args(["keys", *argv, "--config", str(config)])
    sleeps = sleep if callable(sleep) else (lambda _: None)
    return run_keys(args, clock=clock or Clock(), sleep=sleeps)


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def states(config: Path) -> list[str]:
    return [e.state.value for e in read_entries(config.parent / "keys")]


def test_full_runbook_and_list(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    keys(config, "generate", "--algorithm", "ES256", clock=clock)
    old = last_line(capsys)
    keys(config, "add", clock=clock)
    out = capsys.readouterr().out
    new = out.strip().splitlines()[-1]
    assert "ship bundle.pem" in out
    assert f"registry-auth keys promote {new}" in out

    clock.now = T0 + timedelta(minutes=1)
    keys(config, "promote", new, clock=clock)
    out = capsys.readouterr().out
    assert f"after 2026-03-01 12:02:33 UTC run\n  registry-auth keys retire {old}" in out

    keys(config, "list", clock=clock)
    listing = capsys.readouterr().out
    assert f"{old} ES256 retiring" in listing
    assert "retire after 2026-03-01 12:02:33" in listing
    assert f"{new} ES256 active" in listing  # the ring's algorithm, as no --algorithm said

    clock.now = T0 + timedelta(minutes=2, seconds=33)
    assert keys(config, "retire", old, clock=clock) == 0
    assert states(config) == ["active"]


def test_retire_too_early_says_how_long_to_wait(config: Path) -> None:
    clock = Clock()
    keys(config, "generate", clock=clock)
    keys(config, "rotate", "--promote-after", "1m", clock=clock)
    old = read_entries(config.parent / "keys")[0].kid
    clock.now = T0 + timedelta(seconds=89)
    with pytest.raises(
        RotationRefusedError,
        match=r"token_ttl \(30 s\) .* reload_interval and a second \(3 s\) .* Wait 5 s .* --force",
    ):
        keys(config, "retire", old, clock=clock)
    assert states(config) == ["retiring", "active"]
    assert keys(config, "retire", old, "--force", clock=clock) == 0
    assert states(config) == ["active"]


def test_retire_adds_the_configured_key_propagation(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In Kubernetes pods sign with the old key until kubelet refreshes their Secret: the wait
    # (list, promote's advice and retire) grows by key_propagation.
    config.write_text(config.read_text() + "key_propagation: 120\n")
    clock = Clock()
    keys(config, "generate", clock=clock)
    keys(config, "rotate", "--promote-after", "1m", clock=clock)
    promoted = capsys.readouterr().out
    assert "every running instance signs with it within 123 s" in promoted
    assert "after 2026-03-01 12:03:33 UTC run" in promoted
    old = read_entries(config.parent / "keys")[0].kid
    clock.now = T0 + timedelta(seconds=209)
    with pytest.raises(RotationRefusedError, match=r"key_propagation \(120 s\) .* Wait 5 s"):
        keys(config, "retire", old, clock=clock)
    keys(config, "list", clock=clock)
    assert "retire after 2026-03-01 12:03:33" in capsys.readouterr().out
    clock.now = T0 + timedelta(seconds=213)
    assert keys(config, "retire", old, clock=clock) == 0
    assert states(config) == ["active"]


def test_generate_refuses_an_existing_ring_unless_forced(config: Path) -> None:
    keys(config, "generate")
    with pytest.raises(RotationRefusedError, match=r"keys: it already has a key ring.*keys rotate"):
        keys(config, "generate")
    keys(config, "generate", "--force")
    assert states(config) == ["retiring", "active"]


def test_rotate_promote_after_waits_then_promotes(config: Path) -> None:
    clock = Clock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        assert states(config) == ["active", "next"]  # published while waiting, not signing
        clock.now += timedelta(seconds=seconds)

    keys(config, "generate", clock=clock)
    keys(config, "rotate", "--promote-after", "10m", clock=clock, sleep=sleep)
    assert slept == [600]
    entries = read_entries(config.parent / "keys")
    assert [e.state for e in entries] == [KeyState.RETIRING, KeyState.ACTIVE]
    assert entries[0].retiring_since == T0 + timedelta(minutes=10)


@pytest.mark.parametrize("promote", [[], ["--promote-after", "1m"]])
@pytest.mark.parametrize(("argv", "added"), [([], "ES256"), (["--algorithm", "RS256"], "RS256")])
def test_rotate_keeps_the_active_keys_algorithm_unless_told(
    config: Path, promote: list[str], argv: list[str], added: str
) -> None:
    """`keys rotate` on an ES256 ring added an RS256 key, which signed once promoted."""
    keys(config, "generate", "--algorithm", "ES256")
    keys(config, "rotate", *promote, *argv)
    entries = read_entries(config.parent / "keys")
    assert [e.algorithm.value for e in entries] == ["ES256", added]


@pytest.mark.parametrize(
    "promote", [["--promote-after", "1m"], ["--promote-when-trusted", "https://r.test"]]
)
def test_rotate_that_promotes_by_itself_prints_no_promote_to_run(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    promote: list[str],
) -> None:
    monkeypatch.setattr("app.registry_check.wait_until_trusted", lambda *_, **__: None)
    keys(config, "generate")
    capsys.readouterr()
    keys(config, "rotate", *promote)
    out = capsys.readouterr().out
    assert "keys promote" not in out
    assert "next steps" not in out
    assert "meanwhile: ship bundle.pem (and jwks.json for registry 3.x) to every registry" in out
    assert states(config) == ["retiring", "active"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("2h", 7200), ("1d", 86400), ("365d", 365 * 86400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5s", "1.5h", "10w"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(RegistryAuthError, match="90s, 10m, 2h or 1d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["366d", "8761h", "200000d", "99999999999999"])
def test_parse_duration_refuses_more_than_a_year(text: str) -> None:
    # Every delay ends in time.sleep, which raises OverflowError past ~292 years.
    with pytest.raises(RegistryAuthError, match=f"--interval '{text}': at most 365d"):
        parse_duration(text, "--interval")


def test_jwks_file_for_registry_3(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys(config, "generate", "--algorithm", "ES256")
    kid = last_line(capsys)
    keys(config, "add", "--algorithm", "RS256")
    out_file = config.parent / "registry-jwks.json"
    keys(config, "jwks", "--output", str(out_file))
    assert "wrote 2 key(s) with libtrust kids" in capsys.readouterr().out
    document = json.loads(out_file.read_text())
    assert [k["kty"] for k in document["keys"]] == ["EC", "RSA"]
    assert document["keys"][0]["kid"] == kid
    keys(config, "jwks", "--kid-format", "rfc7638", "--output", "-")
    thumbprints = json.loads(capsys.readouterr().out)
    assert thumbprints["keys"][0]["kid"] != kid
    assert ":" not in thumbprints["keys"][0]["kid"]


def test_thumbprint_kids_never_replace_the_jwks_registries_are_given(config: Path) -> None:
    """KEYS_DIR/jwks.json is shipped to registry 3.x: RFC 7638 kids there would not match the
    tokens' kid. That format is written only where --output says."""
    keys(config, "generate")
    shipped = config.parent / "keys" / "jwks.json"
    before = shipped.read_text()
    with pytest.raises(KeyStoreError, match="--kid-format rfc7638 needs --output FILE"):
        keys(config, "jwks", "--kid-format", "rfc7638")
    assert shipped.read_text() == before


def test_generate_force_drops_a_key_whose_file_is_lost(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's cure for a lost active key: before, the old key stayed in the ring as
    retiring, without its file, and the service still refused the ring."""
    keys(config, "generate")
    keys_dir = config.parent / "keys"
    old = read_entries(keys_dir)[0]
    (keys_dir / f"{old.id}.key").unlink()
    capsys.readouterr()
    assert keys(config, "generate", "--force") == 0
    assert f"dropped key {old.kid} from the ring: its {old.id}.key is gone" in (
        capsys.readouterr().out
    )
    assert states(config) == ["active"]
    assert keys(config, "list") == 0  # the ring the service loads


def _ring_with_next(config: Path) -> list[str]:
    """A ring of an active key and a next key: their kids, in that order."""
    keys(config, "generate")
    keys(config, "add")
    return [e.kid for e in read_entries(config.parent / "keys")]


def test_a_certificate_of_another_key_is_never_shipped(tmp_path: Path, config: Path) -> None:
    """A mixed restore of a backup: the active key's files from another ring. `keys retire`
    rewrote bundle.pem with the other certificate (every pull then failed at registries given
    it) and `keys jwks` published it; both refuse now, and the files stay as they were."""
    _ring_with_next(config)
    keys_dir = config.parent / "keys"
    other = tmp_path / "other"
    other.mkdir()
    (other / "registry-auth.yaml").write_text(CONFIG)
    keys(other / "registry-auth.yaml", "generate")
    (stranger,) = read_entries(other / "keys")
    active, upcoming = read_entries(keys_dir)
    for suffix in (".key", ".crt"):
        (other / "keys" / f"{stranger.id}{suffix}").replace(keys_dir / f"{active.id}{suffix}")
    bundle = (keys_dir / "bundle.pem").read_bytes()
    jwks = (keys_dir / "jwks.json").read_bytes()
    refusal = f"{active.id}.crt: holds key {stranger.kid}, keyring.json says {active.kid}"
    with pytest.raises(KeyStoreError, match=re.escape(refusal)):
        keys(config, "retire", upcoming.kid)
    with pytest.raises(KeyStoreError, match=re.escape(refusal)):
        keys(config, "jwks")
    assert (keys_dir / "bundle.pem").read_bytes() == bundle
    assert (keys_dir / "jwks.json").read_bytes() == jwks


def test_a_key_whose_certificate_is_lost_can_be_listed_and_retired(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command said `cannot read ID.crt`, the cures the README gives included: the only
    way out was editing keyring.json by hand."""
    active, upcoming = _ring_with_next(config)
    keys_dir = config.parent / "keys"
    next_id = read_entries(keys_dir)[1].id
    (keys_dir / f"{next_id}.crt").unlink()
    capsys.readouterr()
    with pytest.raises(KeyStoreError, match=r"keys retire KID"):
        keys(config, "list")  # the table, then why the service would refuse the ring
    table = capsys.readouterr().out
    assert f"FILES LOST: its {next_id}.crt is gone" in table
    assert active in table
    assert keys(config, "retire", upcoming) == 0
    assert f"retired key {upcoming}" in capsys.readouterr().out
    assert not (keys_dir / f"{next_id}.key").exists()
    assert keys(config, "list") == 0
    assert states(config) == ["active"]


def test_a_lost_active_key_gives_way_to_the_next_key_registries_trust(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the active key's file lost, `keys promote NEXT` was refused, and the only cure
    given, `generate --force`, made a key no registry trusts sign at once (every pull failing
    until the bundles were shipped) while the next key, already trusted, waited."""
    active, upcoming = _ring_with_next(config)
    keys_dir = config.parent / "keys"
    active_id = read_entries(keys_dir)[0].id
    (keys_dir / f"{active_id}.key").unlink()
    with pytest.raises(
        RotationRefusedError, match=r"is the active key and its \S+ is gone: promote"
    ):
        keys(config, "retire", upcoming)  # it would leave the ring with no key that signs
    assert [e.kid for e in read_entries(keys_dir)] == [active, upcoming]  # nothing changed
    capsys.readouterr()
    assert keys(config, "promote", upcoming) == 0
    out = capsys.readouterr().out
    assert f"dropped key {active} from the ring: its {active_id}.key is gone" in out
    assert f"key {upcoming} is active" in out
    assert states(config) == ["active"]
    assert not (keys_dir / f"{active_id}.crt").exists()
    assert keys(config, "list") == 0  # the ring the service loads


def test_unknown_kid_is_named_with_the_ring_it_was_looked_for_in(config: Path) -> None:
    keys(config, "generate")
    with pytest.raises(RotationRefusedError) as raised:
        keys(config, "promote", "NOPE")
    assert str(raised.value).startswith(f"{config.parent / 'keys'}: no key 'NOPE' in the ring (")


def test_next_steps_repeat_the_config_and_keys_dir_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys add` printed `registry-auth keys promote KID`: run from another directory (or
    without the config) it acted on another ring. The printed commands work from anywhere."""
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "cfg.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path / "svc")
    assert main(["keys", "generate", "--config", "cfg.yaml", "--keys-dir", "ring"]) == 0
    old = last_line(capsys)
    assert main(["keys", "add", "--config", "cfg.yaml", "--keys-dir", "ring"]) == 0
    out = capsys.readouterr().out
    new = out.strip().splitlines()[-1]
    where = f"--config {tmp_path}/svc/cfg.yaml --keys-dir {tmp_path}/svc/ring"
    assert f"  2. registry-auth keys promote {new} {where}\n" in out
    monkeypatch.chdir(tmp_path)  # elsewhere, with no ring of its own
    assert main(shlex.split(out.splitlines()[-2].split(". ", 1)[1])[1:]) == 0
    out = capsys.readouterr().out
    assert f"registry-auth keys retire {old} {where}\n" in out
    assert [e.state.value for e in read_entries(tmp_path / "svc" / "ring")] == [
        "retiring", "active",
    ]  # fmt: skip
    assert not (tmp_path / "ring").exists()


@pytest.mark.parametrize("command", [["list"], ["promote", "OLRU"], ["retire", "OLRU"], ["jwks"]])
def test_a_directory_without_a_ring_is_named_with_the_way_to_make_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    """From the wrong directory `keys promote OLRU` said `no key 'OLRU' in the ring (keys:
    none)` (and made ./keys), `keys list` `cannot read keys/keyring.json`; where they looked,
    and what to do, went unsaid."""
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["keys", *command]) == 2
    assert capsys.readouterr().err == (
        f"registry-auth: error: no key ring in {tmp_path}/keys: run `registry-auth keys "
        "generate` first, or give the --config or --keys-dir of the ring\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["generate", "add", "rotate"])
@pytest.mark.parametrize("days", ["0", "36501", "3000000"])
def test_days_out_of_range_are_refused(config: Path, command: str, days: str) -> None:
    # 3000000 days end past X.509's year 9999: the certificate cannot be made.
    with pytest.raises(KeyStoreError, match="--days must be a number of days from 1 to 36500"):
        keys(config, command, "--days", days)
    assert not (config.parent / "keys").exists()


def test_the_longest_validity_makes_a_certificate(config: Path) -> None:
    keys(config, "generate", "--algorithm", "ES256", "--days", "36500")
    (entry,) = read_entries(config.parent / "keys")
    assert entry.not_after - entry.created > timedelta(days=36499)


def test_refusal_through_the_entry_point_is_one_line_and_exit_2(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["keys", "add", "--config", str(config)]) == 0
    assert main(["keys", "add", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"registry-auth: error: {config.parent / 'keys'}: key ")
    assert "is already next: promote it" in err
    assert err.count("\n") == 1
    # The commands it suggests act on this ring, as the ones a step prints do.
    assert err.endswith(f" (each with --config {config.absolute()})\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--promote-when-trusted", "registry.example.org"], "give the registry's URL"),
        (["--promote-when-trusted", "https://r", "--check-every", "0s"], "at least 1s"),
        (["--promote-when-trusted", "https://r", "--give-up-after", "soon"], "--give-up-after"),
        (["--promote-after", "later"], "--promote-after 'later'"),
        (["--promote-after", "200000d"], "--promote-after '200000d': at most 365d"),
        # Promoting before any registry can have the bundle: every token refused meanwhile.
        (["--promote-after", "0s"], "--promote-after 0s: at least 1m, the registries need"),
        (["--promote-after", "59"], "--promote-after 59: at least 1m"),
        # Options of --promote-when-trusted were ignored without it (a missing --cacert too).
        (["--check-every", "5s"], "--check-every: only with --promote-when-trusted"),
        (
            ["--promote-after", "1m", "--give-up-after", "1m", "--cacert", "/nonexistent.pem"],
            "--give-up-after, --cacert: only with --promote-when-trusted",
        ),
    ],
)
def test_rotate_refusing_an_option_adds_no_key(config: Path, argv: list[str], message: str) -> None:
    keys(config, "generate")
    with pytest.raises(RegistryAuthError, match=message):
        keys(config, "rotate", *argv)
    assert states(config) == ["active"]


@pytest.mark.parametrize("by_sigterm", [False, True], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_while_rotate_waits_says_the_key_stays_next(
    config: Path, capsys: pytest.CaptureFixture[str], by_sigterm: bool
) -> None:
    keys(config, "generate")
    capsys.readouterr()

    def ctrl_c(_seconds: float) -> None:
        raise KeyboardInterrupt

    def sigterm(_seconds: float) -> None:  # a CI job's timeout, systemd's stop
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        keys(config, "rotate", "--promote-after", "1h", sleep=sigterm if by_sigterm else ctrl_c)
    new = read_entries(config.parent / "keys")[1].kid
    assert states(config) == ["active", "next"]
    err = capsys.readouterr().err
    assert f"interrupted: key {new} stays next" in err
    assert f"registry-auth keys promote {new} --config {config}" in err
    assert signal.getsignal(signal.SIGTERM) is before  # as it was before rotate


def test_rotate_urls_may_follow_other_options() -> None:
    """As the README says of every list of URLs: they were refused as unrecognized."""
    argv = ["keys", "rotate", "--promote-when-trusted", "https://a", "--give-up-after", "2s"]
    args = parse(build_parser(), [*argv, "https://b", "https://c"])
    assert args.promote_when_trusted == ["https://a", "https://b", "https://c"]
    with pytest.raises(SystemExit):  # without the option, a URL is still an unknown word
        parse(build_parser(), ["keys", "rotate", "--promote-after", "1m", "https://b"])


def test_rotate_reads_the_config_it_promotes_with_before_adding(config: Path) -> None:
    keys(config, "generate")
    keys_dir = config.parent / "keys"
    config.write_text("token_ttl: [\n")  # the promotion reads the token window from it
    with pytest.raises(RegistryAuthError, match="is not valid YAML"):
        keys(config, "rotate", "--keys-dir", str(keys_dir), "--promote-after", "1m")
    assert states(config) == ["active"]


@pytest.mark.parametrize("command", ["add", "rotate"])
def test_add_and_rotate_refuse_a_directory_without_a_ring(
    config: Path, command: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    # Only a `next` key would be a ring with nothing to sign: serve and generate refuse it.
    with pytest.raises(KeyStoreError, match=f"no key ring in {empty}: run `registry-auth keys"):
        keys(config, command, "--keys-dir", str(empty))
    assert list(empty.iterdir()) == []


def test_rotate_takes_one_way_to_promote(config: Path) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["keys", "rotate", "--promote-after", "1m", "--promote-when-trusted", "https://r"]
        )


@pytest.mark.parametrize("damage", ["deleted", "0644"])
def test_list_shows_the_ring_and_says_when_the_service_would_refuse_it(
    config: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    keys(config, "generate")
    kid = last_line(capsys).split()[-1]
    assert keys(config, "list") == 0
    (key_file,) = (config.parent / "keys").glob("*.key")
    if damage == "deleted":
        key_file.unlink()
    else:
        key_file.chmod(0o644)
    with pytest.raises(KeyStoreError, match="the service would refuse this key ring: "):
        keys(config, "list")
    assert kid in capsys.readouterr().out  # the table still came first


@pytest.mark.parametrize("command", ["add", "rotate"])
def test_add_and_rotate_refuse_a_ring_the_service_would_refuse(config: Path, command: str) -> None:
    keys(config, "generate")
    (key_file,) = (config.parent / "keys").glob("*.key")
    key_file.chmod(0o644)
    with pytest.raises(KeyStoreError, match=r"the service would refuse this key ring: .*0644"):
        keys(config, command)
    assert states(config) == ["active"]  # nothing added
    key_file.chmod(0o600)
    keys(config, command)
    assert states(config) == ["active", "next"]


def test_promote_refuses_a_ring_the_service_would_refuse(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service keeps signing with the old key when it cannot load the new one: a retire
    after such a promote cut its clients off."""
    keys(config, "generate")
    keys(config, "add")
    new = last_line(capsys)
    (new_key,) = [p for p in (config.parent / "keys").glob("*.key") if p.stem in new.lower()
                  .replace(":", "")]  # fmt: skip
    new_key.chmod(0o640)
    with pytest.raises(KeyStoreError, match=r"the service would refuse this key ring: .*0640"):
        keys(config, "promote", new)
    assert states(config) == ["active", "next"]
    new_key.chmod(0o600)
    keys(config, "promote", new)
    assert states(config) == ["retiring", "active"]


def test_a_retire_wait_without_the_config_says_it_uses_the_defaults(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `--keys-dir` alone the window is the built-in token_ttl (300 s), whatever the
    service's config sets (LAIN: 1800 s): a retire could come 25 minutes early."""
    monkeypatch.delenv("REGISTRY_AUTH_CONFIG", raising=False)
    keys_dir = str(config.parent / "keys")
    clock = Clock()
    keys(config, "generate", clock=clock)
    old = last_line(capsys)
    keys(config, "add", clock=clock)
    new = last_line(capsys)
    capsys.readouterr()
    keys(config, "promote", new, clock=clock)  # with the config (token_ttl 30): no warning
    assert "warning" not in capsys.readouterr().err
    args = build_parser().parse_args(["keys", "retire", old, "--keys-dir", keys_dir])
    with pytest.raises(RotationRefusedError):
        run_keys(args, clock=clock, sleep=lambda _: None)
    assert (
        "warning: no --config: the wait uses token_ttl (300 s) + reload_interval and a second (3 s)"
        in (capsys.readouterr().err)
    )
    assert keys(config, "list", "--keys-dir", keys_dir) == 0
    assert "warning" not in capsys.readouterr().err  # the config gives the wait
    # `keys list` alone judges the retiring key's "retire after" on the same defaults: said.
    listing = build_parser().parse_args(["keys", "list", "--keys-dir", keys_dir])
    assert run_keys(listing, clock=clock, sleep=lambda _: None) == 0
    listed = capsys.readouterr()
    assert "warning: no --config: the wait uses token_ttl (300 s)" in listed.err
    assert "retire after" in listed.out
    # Refused whatever the wait: the refusal alone, not after a warning about the wait.
    for argv, refusal in (
        (["promote", new], "is already the active key"),
        (["retire", new], "is the active key: it signs every token"),
    ):
        args = build_parser().parse_args(["keys", *argv, "--keys-dir", keys_dir])
        with pytest.raises(RotationRefusedError, match=refusal):
            run_keys(args, clock=clock, sleep=lambda _: None)
        assert capsys.readouterr().err == ""


def test_a_certificate_not_valid_yet_is_flagged_by_list_and_refused_by_promote(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Made on a host whose clock ran an hour ahead: registries reject it until then."""
    keys(config, "generate")
    ahead = Clock()
    ahead.now = T0 + timedelta(hours=1)
    keys(config, "add", clock=ahead)
    new = last_line(capsys)
    keys(config, "list")
    assert f"CERTIFICATE NOT VALID BEFORE {T0 + timedelta(minutes=55):%Y-%m-%d %H:%M:%S}Z" in (
        capsys.readouterr().out
    )
    with pytest.raises(RotationRefusedError, match="is not valid before"):
        keys(config, "promote", new)
    assert states(config) == ["active", "next"]
    keys(config, "promote", new, clock=ahead)  # once its time has come
    assert states(config) == ["retiring", "active"]


def test_a_keyring_json_that_is_no_file_is_said_so_and_nothing_is_written(
    config: Path,
) -> None:
    """`keys list` said there was no ring and to run `keys generate`, which then failed on it
    and left its new key files behind."""
    keys_dir = config.parent / "keys"
    keys_dir.mkdir()
    os.mkfifo(keys_dir / "keyring.json")
    for argv in (["list"], ["generate", "--force"], ["add"]):
        with pytest.raises(KeyStoreError, match=r"keyring\.json is a FIFO, not a regular file"):
            keys(config, *argv)
    assert sorted(p.name for p in keys_dir.iterdir() if not p.name.startswith(".")) == [
        "keyring.json"
    ]
