"""`serve`, and what an operator copies from the config: the registry's `auth: token:` block
(`registry-config`) and the configuration reference (`config-reference`). app.cli builds their
parsers."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from app.assembly import start_refusal
from app.atomic import check_regular_file, write_atomic
from app.cli_common import url_host, uses_embedded_defaults
from app.config_reference import render_reference, replace_block
from app.config_warnings import config_warnings
from app.errors import ConfigError, RegistryAuthError
from app.keys.store import BUNDLE_FILE, bundle_path, generate_key, has_keys
from app.settings import (
    EMBEDDED_DEFAULTS,
    Settings,
    load_settings,
    override_setting,
    split_listen,
)

# serve(settings, host, port, reread): `reread` loads the config again as `serve` did at the
# start (file, environment, command-line overrides): SIGHUP applies it (app.api.config_reread).
Serve = Callable[[Settings, str | None, int | None, Callable[[], Settings]], None]


def run(args: argparse.Namespace, serve: Serve) -> int:
    if args.command == "serve":
        return _serve(args, serve)
    if args.command == "registry-config":
        settings = load_settings(args.config)
        if not uses_embedded_defaults(args):
            _warn_without_a_ring(args, settings.keys_dir)
        print(registry_config_block(settings), end="")
        return 0
    return _config_reference(args.update)


def _warn_without_a_ring(args: argparse.Namespace, keys_dir: Path) -> None:
    """The block names a bundle.pem that `keys generate` has not made yet: the registry would
    not start. A warning, not an error: the block is right, and is often pasted first. (With
    the embedded defaults `serve` makes a development key there, so nothing to say.)"""
    if has_keys(keys_dir):
        return
    config = f" --config {shlex.quote(str(args.config.absolute()))}" if args.config else ""
    print(
        f"registry-auth: warning: no key ring in {keys_dir.absolute()} yet: the registry cannot "
        f"start without its {BUNDLE_FILE}; run `registry-auth keys generate{config}` first",
        file=sys.stderr,
    )


def _config_reference(update: Path | None) -> int:
    reference = render_reference()
    if update is None:
        print(reference, end="")
        return 0
    try:
        # A FIFO would block the read for ever, and a device would be replaced by a file.
        check_regular_file(update, RegistryAuthError)
        document = update.read_text(encoding="utf-8")
        mode = stat.S_IMODE(update.stat().st_mode)
        # A crash or a full disk halfway leaves the old document, not half of the new one. A
        # document in a developer's checkout: root may write it there.
        new = replace_block(document, reference).encode("utf-8")
        write_atomic(update, new, mode=mode, guard_root=False)
    except RegistryAuthError as exc:  # from the checks or the write: the same prefix
        raise RegistryAuthError(f"--update {exc}") from None
    except OSError as exc:
        raise RegistryAuthError(f"--update {update}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RegistryAuthError(f"--update {update}: not UTF-8 text") from None
    except ValueError as exc:  # no markers
        raise RegistryAuthError(f"--update {update}: {exc}") from None
    print(f"updated the configuration reference in {update}")
    return 0


def _serve(args: argparse.Namespace, serve: Serve) -> int:
    settings = _serve_settings(args)
    _check_temporary_directory()
    if uses_embedded_defaults(args):
        _prepare_development(settings)
    refused = start_refusal(settings)
    if refused is not None:
        raise refused
    for warning in config_warnings(settings, os.environ):
        print(f"registry-auth: warning: {warning}", file=sys.stderr)
    print(f"registry-auth: access control: {access_control(settings)}", file=sys.stderr)
    # On stderr: stdout carries the audit log's JSON lines (`audit_log: -`) and nothing else,
    # for a log shipper that parses every line. `registry-config` prints it to stdout.
    print(registry_config_block(settings), end="", file=sys.stderr, flush=True)
    serve(settings, args.host, args.port, lambda: _serve_settings(args, quiet=True))
    return 0


def _yaml_string(value: str) -> str:
    """`value` double-quoted as YAML reads it back: JSON's escapes are YAML's, but not its
    surrogate pairs (go-yaml refuses `\\ud83d\\ude00`), so printable characters stay as they are
    and the others (which YAML refuses raw, or reads as line breaks) are escaped YAML's way."""
    return "".join(
        char if char.isprintable() else _yaml_escape(char)
        for char in json.dumps(value, ensure_ascii=False)
    )


def _yaml_escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def access_control(settings: Settings) -> str:
    """What decides the grants, said at the start: `acl:` left empty silently meant the
    built-in default, which lets every logged-in account push everywhere."""
    decides = (
        f"the ACL {settings.acl}"
        if settings.acl is not None
        else "the built-in default (every logged-in account may pull and push every "
        "repository; set `acl` to narrow it)"
    )
    hook = settings.authz_webhook
    return decides + (f", narrowed by the authorization webhook {hook.name!r}" if hook else "")


def _check_temporary_directory() -> None:
    """The metrics files of the server's processes go to a directory made under TMPDIR or /tmp
    (app.api.metrics_http), unless PROMETHEUS_MULTIPROC_DIR names one: with a read-only root
    file system and no tmpfs on /tmp, say so before anything starts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        tempfile.gettempdir()  # tries each candidate by writing a file there; then kept
    except OSError as exc:
        raise RegistryAuthError(
            f"no writable temporary directory for the metrics files ({exc.strerror or exc}): "
            "mount a tmpfs on /tmp (docker run --tmpfs /tmp), or set TMPDIR or "
            "PROMETHEUS_MULTIPROC_DIR to a writable directory"
        ) from None


def _serve_settings(args: argparse.Namespace, *, quiet: bool = False) -> Settings:
    """The settings `serve` runs on: the config, then --workers, --host and --port."""
    settings = load_settings(args.config)
    if args.workers is not None:
        settings = override_setting(settings, "--workers", "workers", args.workers)
    if args.host is not None or args.port is not None:
        embedded = uses_embedded_defaults(args)
        settings = _listen_on(settings, args.host, args.port, embedded, quiet=quiet)
    return settings


def _listen_on(
    settings: Settings, host: str | None, port: int | None, embedded: bool, *, quiet: bool
) -> Settings:
    """`listen` from --host/--port. The embedded development realm follows them (it is this
    very server); a configured realm that named the replaced address gets a warning."""
    if port is not None and not 0 < port < 65536:
        raise ConfigError("--port", f"{port} is not a port (1-65535)")
    old_host, old_port = split_listen(settings.listen)
    host = old_host if host is None else host.strip("[]")
    port = old_port if port is None else port
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    updated = override_setting(settings, "--host", "listen", address)
    if embedded and settings.realm == EMBEDDED_DEFAULTS["realm"]:
        realm = f"http://{url_host(host)}:{port}{settings.realm_path}"
        return override_setting(updated, "--host", "realm", realm)
    if not quiet and _realm_address(settings.realm) == (old_host, old_port) != (host, port):
        print(
            f"registry-auth: warning: realm {settings.realm} names {settings.listen}, where "
            "this server no longer listens (--host/--port): clients are sent there; set "
            "`realm` to the address they reach",
            file=sys.stderr,
        )
    return updated


def _realm_address(realm: str) -> tuple[str | None, int]:
    parts = urlsplit(realm)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _prepare_development(settings: Settings) -> None:
    """Without a config file: make a development key and an empty user file when missing.
    Said on stderr, as the registry block is: stdout carries audit lines only."""
    print(
        "registry-auth: no --config given: running on the embedded development defaults",
        file=sys.stderr,
    )
    if not has_keys(settings.keys_dir):
        key = generate_key(settings.keys_dir)
        print(
            f"registry-auth: generated development key {key.kid} in {settings.keys_dir}",
            file=sys.stderr,
        )
    if settings.htpasswd is not None and not settings.htpasswd.exists():
        settings.htpasswd.touch(mode=0o600)
        print(
            f"registry-auth: created empty {settings.htpasswd}; "
            "add users with `registry-auth users add NAME`",
            file=sys.stderr,
        )


def registry_config_block(settings: Settings) -> str:
    """The `auth: token:` block for the registry's config.yml. Each value is double-quoted
    with YAML's escapes (`_yaml_string`), so YAML reads it back as it is: a `\\` or `"` in an
    issuer stays itself."""
    values = {
        "realm": settings.realm,
        "service": settings.service,
        "issuer": settings.issuer,
        "rootcertbundle": str(bundle_path(settings.keys_dir).resolve()),
    }
    lines = "".join(f"    {key}: {_yaml_string(value)}\n" for key, value in values.items())
    return "# Paste into the registry's config.yml:\nauth:\n  token:\n" + lines
