"""registry-check's reading of a registry's answers. The real registry is in
tests/integration/test_registry_check.py; here, the answers a registry rarely gives (an
in-process transport plays them) and the parts without I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from app.errors import RegistryAuthError, RotationRefusedError
from app.keys.model import Algorithm, KeyState, SigningKey
from app.keys.ring import RingEntry, TokenWindow
from app.keys.store import generate_key, load_keyring, read_entries
from app.main import main
from app.registry_check import (
    Finding,
    _key_finding,
    bearer_challenge,
    check_registry,
    tls_verify,
    wait_until_trusted,
)
from app.settings import Settings

Keys = list[tuple[SigningKey, RingEntry]]
WINDOW = TokenWindow(token_ttl=300)
CHALLENGE = 'Bearer realm="https://auth.example.org/token",service="registry.example.org"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (CHALLENGE, {"realm": "https://auth.example.org/token", "service": "registry.example.org"}),
        ('bearer realm="r",service="s",scope="a"', {"realm": "r", "service": "s", "scope": "a"}),
        ('Basic realm="Registry Realm"', None),
        ("", None),
    ],
)  # fmt: skip
def test_bearer_challenge(header: str, expected: dict[str, str] | None) -> None:
    assert bearer_challenge(header) == expected


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Settings, Keys]:
    settings = Settings(
        issuer="registry-auth",
        service="registry.example.org",
        realm="https://auth.example.org/token",
        keys_dir=tmp_path / "keys",
    )
    generate_key(settings.keys_dir, Algorithm.ES256)
    entries = {e.kid: e for e in read_entries(settings.keys_dir)}
    keys = [(k, entries[k.kid]) for k in load_keyring(settings.keys_dir).keys]
    return settings, keys


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_a_registry_without_token_auth(setup: tuple[Settings, Keys]) -> None:
    settings, keys = setup
    client = _client(lambda request: httpx.Response(200, json={}))
    (finding,) = check_registry(client, "https://r.example", settings, keys)
    assert finding == Finding(False, "https://r.example/v2/ answers without a token: the "
                              "registry has no `auth: token:`")  # fmt: skip


def test_an_answer_that_is_not_a_registry_challenge(setup: tuple[Settings, Keys]) -> None:
    settings, keys = setup
    client = _client(lambda request: httpx.Response(401, headers={"WWW-Authenticate": "Basic"}))
    (finding,) = check_registry(client, "https://r.example/", settings, keys)
    assert not finding.ok
    assert "answered 401 without a Bearer challenge" in finding.text


def test_a_registry_failing_on_the_token_is_named(setup: tuple[Settings, Keys]) -> None:
    settings, keys = setup

    def registry(request: httpx.Request) -> httpx.Response:
        if "authorization" in request.headers:
            return httpx.Response(503)
        return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})

    findings = check_registry(_client(registry), "https://r.example", settings, keys)
    assert [f.ok for f in findings] == [True, True, False]
    assert findings[-1].text == "https://r.example/v2/ answered 503 to a token"


def test_the_check_token_grants_nothing_and_lives_a_minute(
    setup: tuple[Settings, Keys],
) -> None:
    settings, keys = setup
    seen: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        if "authorization" in request.headers:
            seen.append(request.headers["authorization"].removeprefix("Bearer "))
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})

    findings = check_registry(_client(registry), "https://r.example", settings, keys)
    assert all(f.ok for f in findings)
    claims = jwt.decode(seen[0], options={"verify_signature": False})
    assert claims["access"] == []
    assert claims["sub"] == "registry-auth-check"
    assert (claims["iss"], claims["aud"]) == (settings.issuer, settings.service)
    assert claims["exp"] - claims["iat"] == 60


def test_a_retiring_key_no_longer_trusted_is_fine_once_its_tokens_expired(
    setup: tuple[Settings, Keys],
) -> None:
    _, ((key, entry),) = setup
    retiring, now = replace(key, state=KeyState.RETIRING), datetime.now(UTC)
    recent = replace(entry, state=KeyState.RETIRING, retiring_since=now)
    long_ago = replace(entry, state=KeyState.RETIRING, retiring_since=now - timedelta(hours=1))
    assert not _key_finding(retiring, recent, False, WINDOW).ok
    assert _key_finding(retiring, long_ago, False, WINDOW) == Finding(
        True, f"retiring key {key.kid}: no longer trusted, and the tokens it signed have expired"
    )
    assert _key_finding(retiring, recent, True, WINDOW).ok


def test_an_active_key_refused_for_its_certificate_dates_is_told_so(tmp_path: Path) -> None:
    """It blamed the bundle or the issuer: the registry refused the x5c certificate's dates."""
    ahead = datetime.now(UTC) + timedelta(days=2)
    generate_key(tmp_path / "k", Algorithm.ES256, clock=lambda: ahead)
    entry = read_entries(tmp_path / "k")[0]
    key = load_keyring(tmp_path / "k").active
    finding = _key_finding(key, entry, False, WINDOW)
    assert not finding.ok
    assert f"refused: its certificate is not valid before {key.not_before:%Y-%m-%d %H:%M:%S}Z" in (
        finding.text
    )
    assert "bundle" not in finding.text
    # Without x5c the registry never sees the dates: the usual reasons stand.
    assert "ship bundle.pem" in _key_finding(key, entry, False, WINDOW, x5c=False).text
    assert _key_finding(key, entry, True, WINDOW).ok


@pytest.fixture
def ring_config(tmp_path: Path) -> Path:
    """A config whose keys_dir holds an ES256 ring."""
    config = tmp_path / "c.yaml"
    config.write_text(f"issuer: i\nservice: s\nrealm: http://a/token\nkeys_dir: {tmp_path}/k\n")
    generate_key(tmp_path / "k", Algorithm.ES256)
    return config


def test_a_url_without_a_scheme_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ring_config: Path
) -> None:
    config = ring_config
    assert main(["registry-check", "--config", str(config), "registry.example.org"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "registry-auth: error: registry.example.org: give the registry's URL, https://HOST[:PORT]\n"
    )
    with pytest.raises(RegistryAuthError, match="--cacert"):
        tls_verify(tmp_path / "missing.pem")


def test_a_url_with_a_password_is_refused_without_printing_it(
    capsys: pytest.CaptureFixture[str], ring_config: Path
) -> None:
    config = ring_config
    url = "https://admin:PW1@23@registry.example.org:5000"  # an @ in the password too
    assert main(["registry-check", "--config", str(config), url]) == 2
    err = capsys.readouterr().err
    assert "PW1" not in err
    assert "23@" not in err
    assert "https://...@registry.example.org:5000: a registry URL with user:password" in err


class Registry:
    """Plays a registry that starts trusting a key at its `trusted_from`-th look."""

    def __init__(self, trusted_from: int) -> None:
        self.trusted_from, self.looks = trusted_from, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})
        self.looks += 1
        return httpx.Response(200 if self.looks >= self.trusted_from else 401)


def test_waiting_until_every_registry_trusts_a_key(setup: tuple[Settings, Keys]) -> None:
    settings, ((key, _),) = setup
    registry, slept, said = Registry(trusted_from=3), [], []
    wait_until_trusted(
        _client(registry), ["https://r1.example", "https://r2.example"], settings, key,
        every=5, give_up_after=3600, sleep=slept.append, clock=lambda: 0.0, say=said.append,
    )  # fmt: skip
    # Looks 1 and 2 (r1, r2) refuse; look 3 (r1) and 4 (r2) accept.
    assert slept == [5]
    assert said == [
        f"0 of 2 registries trust {key.kid}; waiting for https://r1.example, https://r2.example "
        "(ship bundle.pem to it and restart it)",
        f"every registry (2) trusts {key.kid}",
    ]


def test_waiting_gives_up_and_says_what_to_do(setup: tuple[Settings, Keys]) -> None:
    settings, ((key, _),) = setup
    times = iter([0.0, 30.0, 61.0])
    said: list[str] = []
    with pytest.raises(RotationRefusedError) as refused:
        wait_until_trusted(
            _client(Registry(trusted_from=10**6)), ["https://r1.example"], settings, key,
            every=30, give_up_after=60, sleep=lambda _: None, clock=lambda: next(times),
            say=said.append,
        )  # fmt: skip
    assert len(said) == 1  # the same news is not said again on every look
    assert str(refused.value).startswith("gave up after 60 s: https://r1.example does not trust")
    assert f"`keys promote {key.kid}`" in str(refused.value)


def test_a_registry_of_an_extra_service_is_checked_with_its_own_audience(
    setup: tuple[Settings, Keys],
) -> None:
    settings, keys = setup
    settings = settings.model_copy(update={"extra_services": ["staging.example.org"]})
    staging = CHALLENGE.replace("registry.example.org", "staging.example.org")
    audiences: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        if "authorization" in request.headers:
            token = request.headers["authorization"].removeprefix("Bearer ")
            audiences.append(jwt.decode(token, options={"verify_signature": False})["aud"])
            return httpx.Response(200 if audiences[-1] == "staging.example.org" else 401)
        return httpx.Response(401, headers={"WWW-Authenticate": staging})

    findings = check_registry(_client(registry), "https://staging.example", settings, keys)
    assert [f.ok for f in findings] == [True, True, True], findings
    assert findings[1].text == "service: staging.example.org"
    said: list[str] = []
    wait_until_trusted(
        _client(registry), ["https://staging.example"], settings, keys[0][0],
        every=5, give_up_after=60, sleep=lambda _: None, say=said.append,
    )  # fmt: skip
    assert said == [f"every registry (1) trusts {keys[0][0].kid}"]
    assert set(audiences) == {"staging.example.org"}


def test_a_registry_of_another_service_is_told_so_and_its_keys_not_judged(
    setup: tuple[Settings, Keys],
) -> None:
    settings, keys = setup
    other = CHALLENGE.replace("registry.example.org", "elsewhere.example.org")
    asked: list[httpx.Request] = []

    def registry(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(401, headers={"WWW-Authenticate": other})

    findings = check_registry(_client(registry), "https://r.example", settings, keys)
    assert [f.ok for f in findings] == [True, False, False]
    assert "the registry says 'elsewhere.example.org'" in findings[1].text
    assert findings[2].text == "keys: not checked until the service matches"
    assert all("authorization" not in request.headers for request in asked)  # no token sent
