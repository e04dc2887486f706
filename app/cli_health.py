"""`registry-auth healthcheck`: is the service of this config answering? For a container's
HEALTHCHECK or a supervisor's probe: the address (`listen`) and the scheme (`tls`) come from the
config, so the check follows them (not `serve --host/--port`: give the address in the config).
Exit status 0 when /healthz answers 200, 1 otherwise (never 2: Docker reserves it)."""

from __future__ import annotations

import argparse
import math
import ssl
import urllib.error
import urllib.request

from app.cli_common import config_option, url_host
from app.errors import RegistryAuthError

_MAX_TIMEOUT = 300  # a probe longer than five minutes is a typo, not a health check


def add_commands(parser: argparse.ArgumentParser) -> None:
    config_option(parser)
    parser.add_argument(
        "--timeout",
        default="3",
        help=f"seconds to wait for the answer (default 3, at most {_MAX_TIMEOUT})",
    )


def run(args: argparse.Namespace) -> int:
    from app.settings import load_settings, split_listen  # noqa: PLC0415 - loaded only when it runs

    timeout = _timeout(args.timeout)
    try:
        settings = load_settings(args.config)
        host, port = split_listen(settings.listen)
    except RegistryAuthError as exc:
        print(f"registry-auth: unhealthy: {exc}")
        return 1
    scheme = "https" if settings.tls is not None else "http"
    url = f"{scheme}://{url_host(host)}:{port}/healthz"
    healthy, how = probe(url, timeout)
    print(f"registry-auth: {how}: {url}")
    return 0 if healthy else 1


def _timeout(text: str) -> float:
    """--timeout in seconds: a finite number above 0 (0 made the socket non-blocking, and the
    probe said `unhealthy (Operation now in progress)`) and at most _MAX_TIMEOUT. A bad one is
    the HEALTHCHECK line's mistake, not the service's: an error (exit 2), not `unhealthy`."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= _MAX_TIMEOUT):
        raise RegistryAuthError(
            f"--timeout {text!r}: give seconds, more than 0 and at most {_MAX_TIMEOUT}"
        )
    return seconds


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """GET `url` once: (answered 200, what happened)."""
    # The service's own certificate names the host clients use, not this loopback address:
    # liveness needs an answer, not an identity.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # No proxy: HTTP(S)_PROXY in a container's environment is for the way out, not for this.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        return False, f"unhealthy (HTTP {exc.code})"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"unhealthy ({getattr(exc, 'reason', exc)})"
    if status != 200:
        return False, f"unhealthy (HTTP {status})"
    return True, "healthy"
