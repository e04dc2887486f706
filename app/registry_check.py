"""`registry-auth registry-check URL...`: ask each registry whether it sends clients here and
which of the ring's keys it trusts, before a rotation step depends on it.

The registry says where it sends clients in its 401 challenge (`realm`, `service`). Whether it
trusts a key it only says by accepting a token: so a token is signed with each key of the ring
(no access, 60 s of life, subject `registry-auth-check`) and shown to `GET /v2/`, which needs
a valid token and nothing else. 200: trusted; 401: not (the registry's log says why).
"""

from __future__ import annotations

import re
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx

from app.errors import RegistryAuthError, RotationRefusedError
from app.keys import ring
from app.keys.model import KeyState, SigningKey
from app.keys.ring import RingEntry
from app.keys.signing import sign_token
from app.protocol.tokens import build_claims
from app.settings import Settings

CHECK_SUBJECT = "registry-auth-check"
CHECK_TTL = 60
TIMEOUT_SECONDS = 10.0
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class Finding(NamedTuple):
    ok: bool
    text: str


def check_registry(
    client: httpx.Client,
    url: str,
    settings: Settings,
    keys: Sequence[tuple[SigningKey, RingEntry]],
) -> list[Finding]:
    """What `url` (the registry's base URL) says of this service's realm, service and keys."""
    base = _v2(url)
    try:
        answer = client.get(base)
    except httpx.HTTPError as exc:
        return [Finding(False, f"cannot reach {base}: {exc}")]
    if answer.status_code == 200:
        return [
            Finding(False, f"{base} answers without a token: the registry has no `auth: token:`")
        ]
    challenge = bearer_challenge(answer.headers.get("www-authenticate", ""))
    if answer.status_code != 401 or challenge is None:
        return [
            Finding(False, f"{base} answered {answer.status_code} without a Bearer challenge: "
                    "not a registry with `auth: token:`")
        ]  # fmt: skip
    theirs = challenge.get("service")
    service = theirs if theirs in settings.extra_services else settings.service
    findings = [
        _same("realm", challenge.get("realm"), settings.realm),
        _same("service", theirs, service),
    ]
    if theirs not in settings.services:
        # A token for our service would be refused for its audience alone: "does not trust
        # this key" would send the operator after the bundle instead.
        return [*findings, Finding(False, "keys: not checked until the service matches")]
    window = ring.TokenWindow.of(settings)
    for key, entry in keys:
        accepted = accepts(client, base, key, settings, service)
        if isinstance(accepted, Finding):
            return [*findings, accepted]
        findings.append(_key_finding(key, entry, accepted, window, x5c=settings.x5c))
    return findings


def _v2(url: str) -> str:
    """The registry's API base, GET /v2/: answered 401 without a token, 200 with a good one."""
    return url.rstrip("/") + "/v2/"


def bearer_challenge(header: str) -> dict[str, str] | None:
    """The parameters of `Bearer realm="...",service="..."`; None for another scheme."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return dict(_PARAM.findall(params))


def _same(name: str, registry: str | None, ours: str) -> Finding:
    if registry == ours:
        return Finding(True, f"{name}: {ours}")
    return Finding(
        False, f"{name}: the registry says {registry!r}, this service {ours!r}: make them equal"
    )


def accepts(
    client: httpx.Client, base: str, key: SigningKey, settings: Settings, service: str | None = None
) -> bool | Finding:
    """Whether GET `base` (a registry's /v2/) accepts a token signed by `key` for `service`
    (absent: the one it names, when it is one of ours); a Finding when the registry cannot be
    asked."""
    if service is None:
        service = settings.service
        if settings.extra_services:  # which of ours is it? Its challenge says.
            try:
                challenge = bearer_challenge(client.get(base).headers.get("www-authenticate", ""))
            except httpx.HTTPError as exc:
                return Finding(False, f"cannot reach {base}: {exc}")
            if challenge is not None and challenge.get("service") in settings.extra_services:
                service = challenge["service"]
    now = int(time.time())
    claims = build_claims(
        issuer=settings.issuer,
        subject=CHECK_SUBJECT,
        audience=service,
        access=(),
        issued_at=now,
        ttl=CHECK_TTL,
        jti=secrets.token_urlsafe(16),
    )
    token = sign_token(key, claims, x5c=settings.x5c)
    try:
        answer = client.get(base, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return Finding(False, f"cannot reach {base}: {exc}")
    if answer.status_code not in (200, 401):
        return Finding(False, f"{base} answered {answer.status_code} to a token")
    return answer.status_code == 200


# What the registry's answer to a token signed by a key in each state means.
_MEANING = {
    (KeyState.ACTIVE, True): (True, "accepted"),
    (KeyState.ACTIVE, False): (
        False,
        "refused, so every token is: the registry does not trust this key (ship bundle.pem to "
        "it and restart it), or its `issuer` is not this service's (its log says which)",
    ),
    (KeyState.NEXT, True): (True, "accepted: `keys promote` is safe for this registry"),
    (KeyState.NEXT, False): (
        False,
        "not trusted yet: ship bundle.pem to this registry and restart it before `keys promote`"
        " (if the active key is refused too, look at the registry's `issuer` first)",
    ),
    (KeyState.RETIRING, True): (True, "still accepted, as the tokens it signed need"),
    (KeyState.RETIRING, False): (
        False,
        "no longer trusted while tokens it signed may still be valid: ship the bundle with it "
        "again (if the active key is refused too, look at the registry's `issuer` first)",
    ),
}


def _key_finding(
    key: SigningKey,
    entry: RingEntry,
    accepted: bool,
    window: ring.TokenWindow,
    *,
    x5c: bool = True,
) -> Finding:
    ok, text = _MEANING[key.state, accepted]
    now = time.time()
    safe_at = ring.retire_after(entry, window)
    if not ok and safe_at is not None and now >= safe_at.timestamp():
        ok, text = True, "no longer trusted, and the tokens it signed have expired"
    elif not accepted and x5c and now < key.not_before.timestamp():
        # Not the bundle nor the issuer: the registry checks the x5c certificate's dates.
        text = (
            f"refused: its certificate is not valid before {key.not_before:%Y-%m-%d %H:%M:%S}Z "
            "(made on a host whose clock ran ahead?), and the registry checks the dates of the "
            "certificate in x5c; add a fresh key and promote it"
        )
    elif not accepted and x5c and now >= key.not_after.timestamp():
        text = (
            f"refused: its certificate expired at {key.not_after:%Y-%m-%d %H:%M}Z, and the "
            "registry checks the dates of the certificate in x5c; add a fresh key and promote it"
        )
    return Finding(ok, f"{key.state.value} key {key.kid}: {text}")


def wait_until_trusted(
    client: httpx.Client,
    urls: Sequence[str],
    settings: Settings,
    key: SigningKey,
    *,
    every: float,
    give_up_after: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], None] = print,
    options: str = "",
) -> None:
    """Return once every registry at `urls` accepts tokens signed by `key`, checking `every`
    seconds; RotationRefusedError once `give_up_after` seconds have passed first (its
    `keys promote` to run later carries `options`: the command's --config, --keys-dir)."""
    started, said = clock(), ""
    while True:
        waiting = []
        for url in urls:
            answer = accepts(client, _v2(url), key, settings)
            if answer is not True:
                waiting.append(url if answer is False else f"{url} (unreachable)")
        if not waiting:
            say(f"every registry ({len(urls)}) trusts {key.kid}")
            return
        news = f"{len(urls) - len(waiting)} of {len(urls)} registries trust {key.kid}; waiting for "
        news += f"{', '.join(waiting)} (ship bundle.pem to it and restart it)"
        if news != said:
            say(news)
            said = news
        if clock() - started >= give_up_after:
            raise RotationRefusedError(
                f"gave up after {give_up_after:.0f} s: {', '.join(waiting)} does not trust "
                f"{key.kid} yet. It stays next: `keys promote {key.kid}{options}` once "
                "`registry-check` shows every registry trusts it"
            )
        sleep(every)


def check_urls(urls: Sequence[str]) -> None:
    for url in urls:
        if not url.startswith(("https://", "http://")):
            raise RegistryAuthError(f"{url}: give the registry's URL, https://HOST[:PORT]")
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # Never needed (the check signs its own token), and it would be printed back in
            # every status line.
            shown = f"{parts.scheme}://...@{parts.netloc.rpartition('@')[2]}{parts.path}"
            raise RegistryAuthError(
                f"{shown}: a registry URL with user:password in it is refused; give "
                "https://HOST[:PORT] (the check signs its own token)"
            )


def registry_client(verify: ssl.SSLContext | bool) -> httpx.Client:
    """The client that asks the registries, each request within TIMEOUT_SECONDS."""
    return httpx.Client(timeout=TIMEOUT_SECONDS, verify=verify)


def tls_verify(cacert: Path | None) -> ssl.SSLContext | bool:
    """httpx's `verify` for the registries: the system's CAs, or those in `cacert`."""
    if cacert is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise RegistryAuthError(f"--cacert {cacert}: {exc}") from None
