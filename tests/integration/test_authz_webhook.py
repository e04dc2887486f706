"""The authorization webhook against a real HTTP server (a project-membership service) started
by the tests, and end to end: skopeo pushes to docker-registry 2.8 where the ACL allows it and
the service says the account is a member."""

from __future__ import annotations

import io
import ipaddress
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from pydantic import SecretStr

from app.api.app import create_app
from app.authn.htpasswd import hash_password
from app.authz.base import Requester
from app.authz.webhook import AuthzWebhook
from app.backend_settings import AuthzWebhookSettings
from app.breaker import BreakerState
from app.cli import run
from app.errors import AuthorizationUnavailableError
from app.protocol.scopes import Scope, parse_scope
from app.settings import load_settings
from tests.conftest import api_client
from tests.fake_clock import FakeClock
from tests.integration.support.oci import OciImage
from tests.integration.support.policy_server import PolicyServer, start_policy_server
from tests.integration.support.skopeo import Creds, Skopeo
from tests.integration.support.stack import ALICE, Stack
from tests.integration.support.webhook_server import SsoBridge, start_sso_bridge
from tests.unit.test_cli_errors import no_serve

pytestmark = pytest.mark.anyio

MEMBERS = {"team": {"alice": ["pull", "push"], "bob": ["pull"]}, "ops": {"alice": ["*"]}}
ALICE_HERE = Requester(
    "alice", "registry.test", frozenset({"dev"}), ipaddress.ip_address("10.1.2.3")
)


@pytest.fixture
def policy() -> Iterator[PolicyServer]:
    server = start_policy_server(PolicyServer({k: dict(v) for k, v in MEMBERS.items()}))
    yield server
    server.stop()


@pytest.fixture
async def make_hook(policy: PolicyServer) -> AsyncIterator[Callable[..., AuthzWebhook]]:
    made: list[AuthzWebhook] = []

    def make(clock: Callable[[], float] | None = None, **options: Any) -> AuthzWebhook:
        config = AuthzWebhookSettings(**{"url": policy.url, "retries": 0, **options})
        extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
        made.append(AuthzWebhook(config, secret=SecretStr("policy-Secret-3"), **extra))
        return made[-1]

    yield make
    for hook in made:
        await hook.aclose()


def scopes(*texts: str) -> list[Scope]:
    """Scopes as the ACL granted them; `name:` for one it granted nothing on."""
    return [
        parse_scope(text) if not text.endswith(":") else Scope("repository", text[:-1], ())
        for text in texts
    ]


def actions(granted: list[Scope]) -> list[tuple[str, tuple[str, ...]]]:
    return [(scope.name, scope.actions) for scope in granted]


async def test_the_token_holds_what_both_the_acl_and_the_service_allow(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    acl_granted = scopes(
        "repository:team/app:pull,push",  # member with pull, push
        "repository:ops/tool:pull,push,delete",  # admin there: "*"
        "repository:other/app:pull",  # not a member
        "team/empty:",  # nothing granted by the ACL: not asked
    )
    granted = await make_hook().restrict(ALICE_HERE, acl_granted)
    assert actions(granted) == [
        ("team/app", ("pull", "push")),
        ("ops/tool", ("pull", "push", "delete")),
        ("other/app", ()),
        ("team/empty", ()),
    ]
    sent = policy.requests[-1]
    assert sent["body"] == {
        "account": "alice",
        "groups": ["dev"],
        "service": "registry.test",
        "client_ip": "10.1.2.3",
        "scopes": [  # in order of type, name and action: one question, however asked
            {"type": "repository", "name": "ops/tool", "actions": ["delete", "pull", "push"]},
            {"type": "repository", "name": "other/app", "actions": ["pull"]},
            {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        ],
    }
    assert sent["headers"]["x-registry-auth-secret"] == "policy-Secret-3"


async def test_the_service_cannot_widen_the_acls_grant(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    policy.members["team"]["bob"] = ["pull", "push", "delete"]
    bob = ALICE_HERE._replace(account="bob")
    granted = await make_hook().restrict(bob, scopes("repository:team/app:pull"))
    assert actions(granted) == [("team/app", ("pull",))]


async def test_nothing_granted_means_nothing_to_ask(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    granted = await make_hook().restrict(ALICE_HERE, scopes("team/app:"))
    assert actions(granted) == [("team/app", ())]
    assert policy.requests == []


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param((500, b"{}"), id="500"),
        pytest.param((302, b""), id="redirect"),
        pytest.param((401, b"{}"), id="401-our-secret-refused"),
        pytest.param((429, b"{}"), id="429-overloaded"),
        pytest.param((200, b"<html>"), id="not-json"),
        pytest.param((200, b'{"scopes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), id="deep"),
        pytest.param((200, b'{"scopes": {"team/app": ["pull"]}}'), id="not-a-list"),
        pytest.param((200, b'{"scopes": [{"type": "repository", "name": "x"}]}'), id="no-actions"),
        pytest.param((200, b'{"allowed": true}'), id="another-shape"),
    ],
)
async def test_anything_but_an_answer_is_an_outage_never_a_grant(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook], outage: tuple[int, bytes]
) -> None:
    policy.outage = outage
    with pytest.raises(AuthorizationUnavailableError) as caught:
        await make_hook(retries=1).restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert caught.value.status == 503
    assert caught.value.body()["details"] == (
        "authorization webhook 'authz' is unavailable; try again later"
    )
    assert len(policy.requests) == 2  # one retry


async def test_a_4xx_grants_nothing_and_is_no_outage(
    policy: PolicyServer,
    make_hook: Callable[..., AuthzWebhook],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service refusing questions about unknown projects (404) must not let any client open
    the circuit for everyone by asking about them."""
    hook = make_hook(breaker_failures=2, name="projects")
    policy.outage = (404, b'{"error": "no such project"}')
    for _ in range(5):
        granted = await hook.restrict(ALICE_HERE, scopes("repository:nope/x:pull"))
        assert actions(granted) == [("nope/x", ())]
    # The log names which webhook refused, as it does for an outage.
    assert "authorization webhook projects answered 404: nothing granted" in caplog.text
    policy.outage = None
    granted = await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert actions(granted) == [("team/app", ("pull",))]  # the circuit stayed closed


async def test_a_refusal_is_not_cached(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    hook = make_hook(cache_ttl=60)
    policy.outage = (404, b"{}")  # the service briefly without its project list, say
    granted = await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert actions(granted) == [("team/app", ())]
    policy.outage = None
    granted = await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert actions(granted) == [("team/app", ("pull",))]
    await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert len(policy.requests) == 2  # the answer, unlike the refusal, is kept


async def test_a_resource_class_never_changes_what_is_granted(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    """The registry ignores a class (its access set is keyed by type and name): a push the
    service allowed on `repository(plugin):team/app` was a push on `team/app` itself. So the
    class is not sent, and one answer per type and name holds for every scope on it."""
    bob = Requester("bob", "registry.test", frozenset(), ipaddress.ip_address("10.1.2.3"))
    plugin = Scope("repository", "team/app", ("pull", "push"), resource_class="plugin")
    granted = await make_hook().restrict(bob, [plugin, *scopes("repository:team/app:pull")])
    assert policy.requests[-1]["body"]["scopes"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    ]
    assert actions(granted) == [("team/app", ("pull",)), ("team/app", ("pull",))]
    assert granted[0].resource_class == "plugin"  # kept in the token, as the client asked

    # A service that answers by class anyway: its entries for one type and name add up.
    entry = {"type": "repository", "class": "plugin", "name": "team/app", "actions": ["push"]}
    policy.outage = (200, json.dumps({"scopes": [entry]}).encode())
    granted = await make_hook().restrict(bob, [plugin, *scopes("repository:team/app:pull,push")])
    assert actions(granted) == [("team/app", ("push",)), ("team/app", ("push",))]


async def test_the_circuit_opens_after_repeated_outages(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    clock = FakeClock()
    hook = make_hook(clock, breaker_failures=2, breaker_reset=30)
    policy.outage = (500, b"{}")
    for _ in range(2):
        with pytest.raises(AuthorizationUnavailableError):
            await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert hook.breaker.state(clock.now) is BreakerState.OPEN
    asked = len(policy.requests)
    with pytest.raises(AuthorizationUnavailableError):
        await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert len(policy.requests) == asked  # failed fast
    policy.outage = None
    clock.now += 30
    granted = await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert actions(granted) == [("team/app", ("pull",))]
    assert hook.breaker.state(clock.now) is BreakerState.CLOSED


async def test_answers_are_reused_for_the_same_question_within_cache_ttl(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    clock = FakeClock()
    hook = make_hook(clock, cache_ttl=30)
    for _ in range(3):
        await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert len(policy.requests) == 1
    elsewhere = ALICE_HERE._replace(ip=ipaddress.ip_address("10.9.9.9"))
    await hook.restrict(elsewhere, scopes("repository:team/app:pull"))  # another question
    await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull,push"))  # another one
    assert len(policy.requests) == 3
    # The same question in other words: actions and scopes in another order.
    await hook.restrict(ALICE_HERE, scopes("repository:team/app:push,pull"))
    both = ("repository:ops/x:pull", "repository:team/app:pull")
    await hook.restrict(ALICE_HERE, scopes(*both))
    await hook.restrict(ALICE_HERE, scopes(*reversed(both)))
    assert len(policy.requests) == 4
    policy.members["team"]["alice"] = []  # removed from the team
    clock.now += 31
    granted = await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert actions(granted) == [("team/app", ())]


async def test_without_cache_ttl_every_request_asks(
    policy: PolicyServer, make_hook: Callable[..., AuthzWebhook]
) -> None:
    hook = make_hook()
    await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    policy.members["team"]["alice"] = []
    granted = await hook.restrict(ALICE_HERE, scopes("repository:team/app:pull"))
    assert actions(granted) == [("team/app", ())]


def test_skopeo_pushes_where_the_acl_and_the_service_both_allow(
    stack_factory: Callable[..., Stack],
    skopeo: Skopeo,
    make_image: Callable[..., OciImage],
    policy: PolicyServer,
    tmp_path: Path,
) -> None:
    acl = tmp_path / "acl.yaml"
    acl.write_text('rules:\n  - match: {account: "*"}\n    allow: [pull, push]\n', "utf-8")
    secret = tmp_path / "policy.secret"
    secret.write_text("policy-Secret-3\n")
    secret.chmod(0o600)
    hook = {"url": policy.url, "secret_file": str(secret), "name": "projects"}
    stack = stack_factory(extra_settings={"acl": str(acl), "authz_webhook": hook})
    creds = Creds(ALICE.username, ALICE.password)
    image = make_image("1.0")
    pushed = skopeo.copy(image.ref, stack.registry.ref("team/app", "1.0"), dest_creds=creds)
    assert pushed.ok, f"{pushed}\n{stack.logs()}"
    refused = skopeo.copy(image.ref, stack.registry.ref("other/app", "1.0"), dest_creds=creds)
    assert not refused.ok
    assert policy.requests[-1]["headers"]["x-registry-auth-secret"] == "policy-Secret-3"

    policy.outage = (500, b"{}")
    answer = httpx.get(
        stack.auth.realm,
        params={"service": stack.auth.service, "scope": "repository:team/app:pull"},
        auth=(ALICE.username, ALICE.password),
        timeout=10,
    )
    assert answer.status_code == 503, answer.text
    assert answer.json()["details"] == (
        "authorization webhook 'projects' is unavailable; try again later"
    )
    assert "Retry-After" in answer.headers


def test_logins_check_asks_the_real_services(
    policy: PolicyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`logins check` goes through the webhook backend and the authorization webhook as the
    server would, and says when either is unavailable (exit 3)."""
    bridge = start_sso_bridge(SsoBridge({"alice": ("alice-pw", ["dev"])}))
    try:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "issuer": "auth",
                    "service": "registry.test",
                    "realm": "https://auth.test/token",
                    "auth_backends": [{"type": "webhook", "url": bridge.url, "name": "sso"}],
                    "authz_webhook": {"url": policy.url, "retries": 0},
                }
            )
        )
        argv = ["logins", "check", "--config", str(config), "--password-stdin", "alice"]
        scopes = ["repository:team/app:pull,push", "repository:other/app:pull"]

        def check(*extra: str) -> tuple[int, str]:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr("sys.stdin", io.StringIO("alice-pw\n"))
                code = run([*argv, *extra], serve=no_serve)
            return code, capsys.readouterr().out

        assert check(*scopes) == (
            0,
            "sso: accepted\naccepted as 'alice'; groups: dev\n"
            "  repository:team/app: pull, push\n  repository:other/app: nothing\n",
        )
        assert policy.requests[-1]["body"]["account"] == "alice"
        policy.outage = (500, b"{}")
        code, out = check(*scopes)
        assert (code, out.splitlines()[-1]) == (3, "authz_webhook 'authz': unavailable (HTTP 500)")
        bridge.mode = "500"
        code, out = check()
        assert (code, out) == (3, "sso: unavailable (HTTP 500): the server would answer 503\n")
    finally:
        bridge.stop()


async def test_every_kind_of_token_request_is_asked(
    policy: PolicyServer, tmp_path: Path, rsa_keys_dir: Path
) -> None:
    """Basic GET, anonymous GET, the POST password grant and the refresh grant all go through
    the webhook; a token reused for the same grant never outlives a narrower answer."""
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text(f"alice:{hash_password('pw', rounds=4)}\n")
    acl = tmp_path / "acl.yaml"
    acl.write_text(
        'rules:\n  - match: {account: "*"}\n    allow: [pull, push]\n'
        '  - match: {anonymous: true, name: "public/*"}\n    allow: [pull]\n'
    )
    policy.members["public"] = {"None": ["pull"]}
    settings = load_settings(
        overrides={
            "issuer": "auth",
            "service": "registry.test",
            "realm": "https://auth.test/token",
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": str(htpasswd),
            "acl": str(acl),
            "state": {"path": str(tmp_path / "state.db")},
            "authz_webhook": {"url": policy.url, "retries": 0},
        }
    )

    def granted(body: dict[str, Any]) -> list[str]:
        claims = jwt.decode(
            body.get("token") or body["access_token"], options={"verify_signature": False}
        )
        return [action for entry in claims["access"] for action in entry["actions"]]

    async with api_client(create_app(settings)) as client:
        query = {"service": "registry.test", "scope": "repository:team/app:pull,push"}
        basic = await client.get("/token", params=query, auth=("alice", "pw"))
        assert granted(basic.json()) == ["pull", "push"]
        anonymous = await client.get(
            "/token", params={**query, "scope": "repository:public/base:pull"}
        )
        assert granted(anonymous.json()) == ["pull"]
        assert policy.requests[-1]["body"]["account"] is None
        form = {
            "grant_type": "password",
            "username": "alice",
            "password": "pw",
            "service": "registry.test",
            "client_id": "containers/image",
            "access_type": "offline",
            "scope": "repository:team/app:pull,push",
        }
        grant = (await client.post("/token", data=form)).json()
        assert granted(grant) == ["pull", "push"]
        policy.members["team"]["alice"] = ["pull"]  # alice loses push on team
        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": grant["refresh_token"],
            "service": "registry.test",
            "client_id": "containers/image",
            "scope": "repository:team/app:pull,push",
        }
        assert granted((await client.post("/token", data=refresh)).json()) == ["pull"]
        again = await client.get("/token", params=query, auth=("alice", "pw"))
        assert granted(again.json()) == ["pull"]  # not the reused pull, push token
        assert len(policy.requests) == 5
