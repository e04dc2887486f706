"""The webhook backend against a real HTTP server (an SSO bridge) started by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.api.app import create_app
from app.authn.base import Credentials, Outcome
from app.authn.webhook import WebhookAuthenticator
from app.backend_settings import WebhookBackend
from app.breaker import BreakerState
from app.errors import BackendUnavailableError
from app.settings import load_settings
from tests.conftest import api_client
from tests.fake_clock import FakeClock
from tests.integration.support.authserver import start_auth_server
from tests.integration.support.webhook_server import SsoBridge, start_sso_bridge

pytestmark = pytest.mark.anyio

ACCOUNTS = {"frank": ("frank-Secret-6", ["ci", "sso-users"]), "gina": ("gina-Secret-7", [])}
FRANK = Credentials(
    "frank", SecretStr("frank-Secret-6"), service="registry.test", client_ip="10.1.2.3"
)


@pytest.fixture
def bridge() -> Iterator[SsoBridge]:
    server = start_sso_bridge(SsoBridge(dict(ACCOUNTS), secret="bridge-Secret-8"))
    yield server
    server.stop()


@pytest.fixture
async def make_webhook(
    bridge: SsoBridge,
) -> AsyncIterator[Callable[..., WebhookAuthenticator]]:
    made: list[WebhookAuthenticator] = []

    def make(clock: Callable[[], float] | None = None, **options: Any) -> WebhookAuthenticator:
        config = WebhookBackend(**{"type": "webhook", "url": bridge.url, **options})
        extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
        made.append(WebhookAuthenticator(config, secret=SecretStr("bridge-Secret-8"), **extra))
        return made[-1]

    yield make
    for webhook in made:
        await webhook.aclose()


async def test_accept_carries_groups_and_sends_the_documented_body(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    result = await make_webhook().authenticate(FRANK)
    assert result.outcome is Outcome.ACCEPTED
    assert result.groups == {"ci", "sso-users"}
    sent = bridge.requests[-1]
    assert sent["body"] == {
        "account": "frank",
        "password": "frank-Secret-6",
        "service": "registry.test",
        "client_ip": "10.1.2.3",
    }
    assert sent["headers"]["x-registry-auth-secret"] == "bridge-Secret-8"
    assert sent["headers"]["content-type"] == "application/json"
    assert sent["headers"]["accept-encoding"] == "identity"  # its size is counted as it comes


@pytest.mark.parametrize("typed", ["FRANK", " frank", "Frank "])
async def test_the_token_is_for_the_account_the_bridge_names(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator], typed: str
) -> None:
    """A bridge that takes `FRANK` as frank: as typed, the token escaped ACL rules (a deny,
    a namespace, a group's members) written for frank."""
    bridge.mode = "folding"
    result = await make_webhook().authenticate(Credentials(typed, FRANK.password))
    assert (result.outcome, result.account) == (Outcome.ACCEPTED, "frank")


async def test_401_and_403_reject(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    webhook = make_webhook()
    wrong = Credentials("frank", SecretStr("nope"))
    assert (await webhook.authenticate(wrong)).outcome is Outcome.REJECTED  # 401
    bridge.secret = "another-secret"
    assert (await webhook.authenticate(FRANK)).outcome is Outcome.REJECTED  # 403
    assert webhook.breaker.state(0) is BreakerState.CLOSED  # refusals are not outages


@pytest.mark.parametrize(
    "mode", ["500", "garbage", "deep", "no-groups", "bad-group", "robot-account"]
)
async def test_500_or_a_body_that_is_not_the_contract_is_an_outage(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator], mode: str
) -> None:
    bridge.mode = mode
    with pytest.raises(BackendUnavailableError):
        await make_webhook(retries=2).authenticate(FRANK)
    assert len(bridge.requests) == 3  # one try and two bounded retries


async def test_an_answer_past_a_mebibyte_is_an_outage_not_read_whole(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    bridge.mode = "huge"
    with pytest.raises(BackendUnavailableError, match="larger than 1048576 bytes"):
        await make_webhook(retries=0).authenticate(FRANK)
    bridge.mode = "normal"
    assert (await make_webhook().authenticate(FRANK)).groups == {"ci", "sso-users"}


async def test_a_compressed_answer_is_an_outage_not_inflated(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    """Asked for `identity`, a bridge that gzips anyway is refused before a byte is inflated:
    one chunk of a gzip bomb inflates to a thousand times its size."""
    bridge.gzipped = True
    with pytest.raises(BackendUnavailableError, match=r"compressed \(gzip\)"):
        await make_webhook(retries=0).authenticate(FRANK)
    bridge.gzipped = False
    assert (await make_webhook().authenticate(FRANK)).groups == {"ci", "sso-users"}


async def test_timeout_is_an_outage(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    bridge.mode, bridge.slow_seconds = "slow", 1.0
    with pytest.raises(BackendUnavailableError, match="timeout"):
        await make_webhook(timeout=0.2, retries=0).authenticate(FRANK)


async def test_an_answer_trickling_in_is_cut_at_twice_the_timeout(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    """Each byte well within `timeout`, the whole answer not: httpx's timeout alone would wait
    for all of it (~2 s here; a hostile or broken bridge could take days)."""
    bridge.trickle = 0.05
    with pytest.raises(BackendUnavailableError, match="timeout"):
        await make_webhook(timeout=0.3, retries=0).authenticate(FRANK)


async def test_refused_connection_is_an_outage(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    webhook = make_webhook(retries=1)
    bridge.stop()
    with pytest.raises(BackendUnavailableError, match="ConnectError"):
        await webhook.authenticate(FRANK)


async def test_circuit_opens_then_closes(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    clock = FakeClock()
    webhook = make_webhook(clock, retries=0, breaker_failures=2, breaker_reset=30)
    bridge.mode = "500"
    for _ in range(2):
        with pytest.raises(BackendUnavailableError, match="HTTP 500"):
            await webhook.authenticate(FRANK)
    assert webhook.breaker.state(clock.now) is BreakerState.OPEN
    asked = len(bridge.requests)
    bridge.mode = "normal"  # the bridge is back, but the circuit is open: fail fast
    with pytest.raises(BackendUnavailableError, match="circuit open"):
        await webhook.authenticate(FRANK)
    assert len(bridge.requests) == asked
    clock.now += 29
    with pytest.raises(BackendUnavailableError, match="circuit open"):
        await webhook.authenticate(FRANK)
    clock.now += 1  # 30 s after opening: one trial request goes out, succeeds, closes it
    assert (await webhook.authenticate(FRANK)).accepted
    assert webhook.breaker.state(clock.now) is BreakerState.CLOSED
    assert len(bridge.requests) == asked + 1


async def test_a_failed_trial_opens_the_circuit_again(
    bridge: SsoBridge, make_webhook: Callable[..., WebhookAuthenticator]
) -> None:
    clock = FakeClock()
    webhook = make_webhook(clock, retries=0, breaker_failures=1, breaker_reset=10)
    bridge.mode = "500"
    with pytest.raises(BackendUnavailableError):
        await webhook.authenticate(FRANK)
    clock.now += 10
    with pytest.raises(BackendUnavailableError, match="HTTP 500"):  # the trial
        await webhook.authenticate(FRANK)
    with pytest.raises(BackendUnavailableError, match="circuit open"):
        await webhook.authenticate(FRANK)


async def test_token_api_answers_503_for_a_500_and_200_with_groups_otherwise(
    bridge: SsoBridge, rsa_keys_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "bridge-secret"
    secret.write_text("bridge-Secret-8\n")
    settings = load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": None,
            "realm": "http://auth.test/token",
            "state": {"path": str(tmp_path / "state.db")},  # failed logins are counted there
            "auth_backends": [
                {"type": "webhook", "name": "sso", "url": bridge.url, "secret_file": str(secret)}
            ],
        }
    )
    params = {"service": settings.service, "scope": "repository:team/app:pull"}
    async with api_client(create_app(settings)) as client:
        ok = await client.get("/token", params=params, auth=("frank", "frank-Secret-6"))
        assert ok.status_code == 200
        assert bridge.requests[-1]["body"]["client_ip"] == "127.0.0.1"
        assert bridge.requests[-1]["body"]["service"] == settings.service
        bad = await client.get("/token", params=params, auth=("frank", "wrong"))
        assert bad.status_code == 401
        bridge.mode = "500"
        down = await client.get("/token", params=params, auth=("frank", "frank-Secret-6"))
        assert down.status_code == 503
        assert down.json() == {
            "details": "authentication backend 'sso' is unavailable; try again later",
            "error": "backend_unavailable",
        }


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "granian"])
def test_the_servers_log_holds_no_line_per_webhook_request_nor_its_url(
    tmp_path: Path, bridge: SsoBridge, workers: int
) -> None:
    """httpx logs each request at INFO with its URL, and a webhook's URL may hold a key in its
    query: the service runs with httpx's INFO lines off."""
    bridge.accounts["jack"] = ("jack-Secret-3", ["ci"])
    secret = tmp_path / "bridge-secret"
    secret.write_text("bridge-Secret-8\n")
    secret.chmod(0o600)
    backend = {
        "type": "webhook",
        "url": f"{bridge.url}?api_key=QueryHookSecret",
        "secret_file": str(secret),
        "retries": 0,
    }
    extra = {"auth_backends": [backend], "htpasswd": None, "workers": workers}
    server = start_auth_server(tmp_path, extra_settings=extra)
    try:
        assert server.token([], ("jack", "jack-Secret-3")).status_code == 200
        assert server.token([], ("jack", "wrong")).status_code == 401
        assert len(bridge.requests) == 2  # the webhook was asked, twice
    finally:
        server.process.stop(timeout=15)
    assert "QueryHookSecret" not in server.log()
    assert "HTTP Request" not in server.log()
