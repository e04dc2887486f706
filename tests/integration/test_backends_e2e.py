"""End to end: skopeo and docker-registry 2.8, with our service authenticating via its chain.

The chain is LDAP (a real slapd) then robot accounts (made with `registry-auth robots create`).
An LDAP user pushes and pulls; a robot pushes; an expired robot is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.authn.robot_store import create_robot
from tests.integration.support.authserver import app_command
from tests.integration.support.oci import OciImage
from tests.integration.support.procs import run_checked
from tests.integration.support.skopeo import Creds, Skopeo, SkopeoResult
from tests.integration.support.slapd import (
    PEOPLE,
    PEOPLE_ENTRIES,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    start_slapd,
)
from tests.integration.support.stack import Stack, start_stack

CAROL = Creds("carol", PEOPLE_ENTRIES["carol"][0])
MakeImage = Callable[..., OciImage]


@dataclass
class E2E:
    stack: Stack
    slapd: Slapd
    pusher: Creds
    expired: Creds


@pytest.fixture(scope="module")
def chain_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """slapd + our service (LDAP, robots) + a registry; a live robot and an expired one."""
    workdir = tmp_path_factory.mktemp("chain-e2e")
    slapd: Slapd = start_slapd(workdir / "slapd")
    secret = workdir / "ldap-password"
    secret.write_text(SERVICE_PASSWORD + "\n")
    secret.chmod(0o600)
    robots = workdir / "robots.yaml"
    created = run_checked(
        app_command("robots", "create", "pusher", "--groups", "ci", "--robots-file", str(robots)),
        what="registry-auth robots create",
    )
    pusher = Creds("robot$pusher", created.stdout.strip())
    past = datetime.now(UTC) - timedelta(hours=1)
    _, old_secret = create_robot(robots, "expired", ["ci"], past)
    backends = [
        {
            "type": "ldap",
            "url": slapd.url,
            "bind_dn": SERVICE_DN,
            "bind_password_file": str(secret),
            "user_base": PEOPLE,
        },
        {"type": "robots", "path": str(robots)},
    ]
    try:
        stack = start_stack(
            workdir / "stack", users=None, extra_settings={"auth_backends": backends}
        )
    except BaseException:
        slapd.stop()
        raise
    yield E2E(stack, slapd, pusher, Creds("robot$expired", old_secret))
    stack.stop()
    slapd.stop()


def _denied(result: SkopeoResult) -> bool:
    words = ("unauthorized", "authentication required", "denied")
    return not result.ok and any(word in result.stderr.lower() for word in words)


def test_ldap_user_pushes_and_pulls(
    chain_stack: E2E, skopeo: Skopeo, make_image: MakeImage, tmp_path: Path
) -> None:
    stack = chain_stack.stack
    image = make_image("1.0", content=b"pushed by an LDAP user")
    pushed = skopeo.copy(image.ref, stack.registry.ref("carol/app", "1.0"), dest_creds=CAROL)
    assert pushed.ok, f"{pushed}\n{stack.logs()}"
    pulled = skopeo.copy(
        stack.registry.ref("carol/app", "1.0"), f"oci:{tmp_path / 'pulled'}:1.0", src_creds=CAROL
    )
    assert pulled.ok, pulled
    wrong = skopeo.inspect(stack.registry.ref("carol/app", "1.0"), Creds("carol", "wrong"))
    assert _denied(wrong), wrong


def test_robot_pushes(chain_stack: E2E, skopeo: Skopeo, make_image: MakeImage) -> None:
    stack, pusher = chain_stack.stack, chain_stack.pusher
    image = make_image("2.0", content=b"pushed by a robot")
    result = skopeo.copy(image.ref, stack.registry.ref("ci/build", "2.0"), dest_creds=pusher)
    assert result.ok, f"{result}\n{stack.logs()}"
    inspected = skopeo.inspect(stack.registry.ref("ci/build", "2.0"), pusher)
    assert inspected.ok, inspected


def test_expired_robot_is_refused(chain_stack: E2E, skopeo: Skopeo, make_image: MakeImage) -> None:
    stack, expired = chain_stack.stack, chain_stack.expired
    image = make_image("3.0", content=b"never pushed")
    result = skopeo.copy(image.ref, stack.registry.ref("ci/late", "3.0"), dest_creds=expired)
    assert _denied(result), result
    token = stack.auth.token(["repository:ci/late:pull"], auth=(expired.username, expired.password))
    assert token.status_code == 401


def test_ldap_down_is_503_for_people_while_robots_still_work(chain_stack: E2E) -> None:
    stack, pusher = chain_stack.stack, chain_stack.pusher
    scopes = ["repository:ci/build:pull"]
    chain_stack.slapd.stop()
    try:
        down = stack.auth.token(scopes, auth=(CAROL.username, CAROL.password))
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "backend_unavailable"
        # Robot names are routed to the robot store alone: LDAP being down does not matter.
        robot = stack.auth.token(scopes, auth=(pusher.username, pusher.password))
        assert robot.status_code == 200, robot.text
    finally:
        chain_stack.slapd.start()
    back = stack.auth.token(scopes, auth=(CAROL.username, CAROL.password))
    assert back.status_code == 200, back.text
