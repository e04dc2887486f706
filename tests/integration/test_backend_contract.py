"""The contract every authentication backend keeps, checked on each, built purely from config.

accept (with the account's groups), reject (known account, wrong password), not mine (an
account it does not own, so the chain asks the next backend), outage (it cannot decide: it
raises BackendUnavailableError, or for a file backend, a broken file keeps the last good
state) — never an accept it did not verify.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from pydantic import SecretStr

from app.authn.base import Credentials, Outcome
from app.authn.build import Authentication, build_authentication
from app.authn.chain import ChainLink
from app.authn.robot_store import create_robot
from app.errors import BackendUnavailableError
from app.settings import load_settings
from tests.integration.support.slapd import (
    PEOPLE,
    PEOPLE_ENTRIES,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    start_slapd,
)
from tests.integration.support.webhook_server import SsoBridge, start_sso_bridge

pytestmark = pytest.mark.anyio


@dataclass
class Case:
    """One backend set up for the contract: its config and what it must answer."""

    config: dict[str, Any]
    account: str
    password: str
    groups: frozenset[str]
    foreign: str  # an account this backend does not own
    break_it: Callable[[], None]
    repair: Callable[[], None]
    outage_raises: bool  # servers raise; file backends keep their last good state


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _htpasswd(tmp: Path, _: Any) -> Case:
    path = tmp / "users.htpasswd"
    path.write_text(f"henry:{_hash('henry-Secret-1')}\n")
    return Case(
        {"type": "htpasswd", "path": str(path)},
        "henry",
        "henry-Secret-1",
        frozenset(),
        "nobody",
        path.unlink,
        lambda: None,
        outage_raises=False,
    )


def _static(tmp: Path, _: Any) -> Case:
    path = tmp / "users.yaml"
    users = {"users": {"iris": {"password": _hash("iris-Secret-2"), "groups": ["ci", "qa"]}}}
    path.write_text(yaml.safe_dump(users))
    return Case(
        {"type": "static", "path": str(path)},
        "iris",
        "iris-Secret-2",
        frozenset({"ci", "qa"}),
        "nobody",
        lambda: path.write_text("users: [not, a, mapping]\n"),
        lambda: None,
        outage_raises=False,
    )


def _robots(tmp: Path, _: Any) -> Case:
    path = tmp / "robots.yaml"
    robot, secret = create_robot(path, "builder", ["ci"], None)
    return Case(
        {"type": "robots", "path": str(path)},
        robot.name,
        secret,
        frozenset({"ci"}),
        "robot$nobody",
        lambda: path.write_text("robots: 3\n"),
        lambda: None,
        outage_raises=False,
    )


def _ldap(tmp: Path, servers: dict[str, Any]) -> Case:
    slapd: Slapd = servers["slapd"]
    secret = tmp / "ldap-password"
    secret.write_text(SERVICE_PASSWORD)
    config = {
        "type": "ldap",
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "bind_password_file": str(secret),
        "user_base": PEOPLE,
        "timeout": 2,
    }
    carol = PEOPLE_ENTRIES["carol"]
    return Case(
        config,
        "carol",
        carol[0],
        frozenset(carol[1]),
        "nobody",
        slapd.stop,
        slapd.start,
        outage_raises=True,
    )


def _webhook(tmp: Path, servers: dict[str, Any]) -> Case:
    bridge: SsoBridge = servers["bridge"]
    bridge.mode = "normal"

    def set_mode(mode: str) -> Callable[[], None]:
        return lambda: setattr(bridge, "mode", mode)

    # The webhook owns the accounts its `accounts` pattern matches: here, the sso- ones.
    config = {"type": "webhook", "url": bridge.url, "retries": 0, "accounts": "sso-[a-z]+"}
    return Case(
        config,
        "sso-jack",
        "jack-Secret-3",
        frozenset({"ci"}),
        "jack",
        set_mode("500"),
        set_mode("normal"),
        outage_raises=True,
    )


BACKENDS = {
    "htpasswd": _htpasswd,
    "static": _static,
    "robots": _robots,
    "ldap": _ldap,
    "webhook": _webhook,
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    slapd = start_slapd(tmp_path_factory.mktemp("contract-slapd"))
    bridge = start_sso_bridge(SsoBridge({"sso-jack": ("jack-Secret-3", ["ci"])}))
    yield {"slapd": slapd, "bridge": bridge}
    bridge.stop()
    slapd.stop()


@pytest.fixture(params=sorted(BACKENDS))
def case(request: pytest.FixtureRequest, tmp_path: Path, servers: dict[str, Any]) -> Case:
    return BACKENDS[request.param](tmp_path, servers)


@pytest.fixture
async def built(case: Case, rsa_keys_dir: Path) -> AsyncIterator[Authentication]:
    settings = load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": None,
            "realm": "http://auth.test/token",
            "auth_backends": [case.config],
        }
    )
    authentication = build_authentication(settings)
    yield authentication
    for close in authentication.closers:
        await close()


def _link(built: Authentication) -> ChainLink:
    assert built.authenticator is not None
    (link,) = built.authenticator.links
    return link


async def _ask(link: ChainLink, account: str, password: str) -> Outcome:
    if not link.answers_for(account):
        return Outcome.NOT_MINE
    result = await link.authenticator.authenticate(Credentials(account, SecretStr(password)))
    return result.outcome


async def test_accepts_with_groups(case: Case, built: Authentication) -> None:
    assert built.authenticator is not None
    result = await built.authenticator.authenticate(
        Credentials(case.account, SecretStr(case.password))
    )
    assert result.outcome is Outcome.ACCEPTED
    assert result.account == case.account
    assert result.groups == case.groups


async def test_rejects_a_wrong_password(case: Case, built: Authentication) -> None:
    assert await _ask(_link(built), case.account, case.password + "x") is Outcome.REJECTED
    assert await _ask(_link(built), case.account, "") is Outcome.REJECTED


async def test_not_mine_for_a_foreign_account(case: Case, built: Authentication) -> None:
    assert await _ask(_link(built), case.foreign, case.password) is Outcome.NOT_MINE


async def test_outage_never_accepts_what_it_cannot_verify(
    case: Case, built: Authentication
) -> None:
    link = _link(built)
    case.break_it()
    try:
        for reloadable in built.reloadables:
            assert not reloadable.reload()  # a broken file is refused, the old state stays
        if case.outage_raises:
            with pytest.raises(BackendUnavailableError):
                await _ask(link, case.account, case.password)
        else:
            assert await _ask(link, case.account, case.password) is Outcome.ACCEPTED
            assert await _ask(link, case.account, "wrong") is Outcome.REJECTED
    finally:
        case.repair()
    assert await _ask(link, case.account, case.password) is Outcome.ACCEPTED
