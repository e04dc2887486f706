"""The LDAP backend against a real OpenLDAP (Debian slapd) started for these tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml
from ldap3 import Connection
from pydantic import SecretStr

from app.api.app import create_app
from app.authn.base import Credentials, Outcome
from app.authn.build import build_authentication
from app.authn.htpasswd import hash_password
from app.authn.ldap import LdapAuthenticator
from app.authz.base import Requester
from app.backend_settings import LdapBackend
from app.errors import AuthenticationError, BackendUnavailableError, TooManyAttemptsError
from app.protocol.scopes import Scope
from app.protocol.tokens import parse_token_request
from app.service import TokenService
from app.settings import load_settings
from tests.conftest import api_client
from tests.integration.support.authserver import app_command
from tests.integration.support.slapd import (
    GROUPS,
    PEOPLE,
    PEOPLE_ENTRIES,
    POSIX_GROUPS,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    start_slapd,
)
from tests.integration.support.trickle import TrickleProxy

pytestmark = pytest.mark.anyio

CAROL = Credentials("carol", SecretStr(PEOPLE_ENTRIES["carol"][0]))


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "ldap-password"
    path.write_text(SERVICE_PASSWORD + "\n")
    return path


def ldap_config(slapd: Slapd, **overrides: Any) -> LdapBackend:
    options: dict[str, Any] = {
        "type": "ldap",
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "bind_password_env": "UNUSED_IN_UNIT",
        "user_base": PEOPLE,
        "timeout": 2,
        "pool_size": 2,
    }
    options.update(overrides)
    return LdapBackend(**options)


_OPEN: list[LdapAuthenticator] = []


@pytest.fixture(autouse=True)
async def _close_backends() -> AsyncIterator[None]:
    """Each backend's pooled connections are closed after the test (no leaked sockets)."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


def authenticator(
    slapd: Slapd, password: str = SERVICE_PASSWORD, **overrides: Any
) -> LdapAuthenticator:
    backend = LdapAuthenticator(ldap_config(slapd, **overrides), SecretStr(password))
    _OPEN.append(backend)
    return backend


def creds(account: str, password: str | None = None) -> Credentials:
    return Credentials(
        account, SecretStr(PEOPLE_ENTRIES[account][0] if password is None else password)
    )


MODES = [
    pytest.param({}, id="search-then-bind+memberOf"),
    pytest.param(
        {"groups_from": "search", "group_base": GROUPS}, id="search-then-bind+group-search"
    ),
    pytest.param(
        {"mode": "direct", "user_dn_template": f"uid={{account}},{PEOPLE}"},
        id="direct-bind+memberOf",
    ),
    pytest.param(
        {
            "mode": "direct",
            "user_dn_template": f"uid={{account}},{PEOPLE}",
            "groups_from": "search",
            "group_base": GROUPS,
        },
        id="direct-bind+group-search",
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("account", sorted(PEOPLE_ENTRIES))
async def test_each_person_gets_their_groups(
    slapd: Slapd, mode: dict[str, Any], account: str
) -> None:
    backend = authenticator(slapd, **mode)
    result = await backend.authenticate(creds(account))
    await backend.aclose()
    assert result.outcome is Outcome.ACCEPTED
    assert result.account == account
    assert result.groups == frozenset(PEOPLE_ENTRIES[account][1])


@pytest.mark.parametrize("mode", MODES)
async def test_wrong_password_is_rejected(slapd: Slapd, mode: dict[str, Any]) -> None:
    backend = authenticator(slapd, **mode)
    result = await backend.authenticate(creds("carol", "not-carols-password"))
    assert result.outcome is Outcome.REJECTED
    assert result.groups == frozenset()


def _record_operations(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str | None]]:
    """The binds and searches ldap3 sends from now on, and each bind's password."""
    operations: list[str] = []
    passwords: list[str | None] = []
    for name in ("bind", "search"):
        real = getattr(Connection, name)

        def recorded(
            self: Connection, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any
        ) -> Any:
            operations.append(_name)
            if _name == "bind":
                passwords.append(self.password)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Connection, name, recorded)
    return operations, passwords


@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_account_asks_the_directory_what_a_wrong_password_asks(
    slapd: Slapd, mode: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The time an answer takes must not tell who has an account. After one search, an unknown
    # name was answered in half the time of a known one with a wrong password (slapd on
    # loopback: ~1.1 against ~2.3-3.2 ms): the bind, the group search and the service
    # account's bind again were the difference. Timing is too noisy to assert here; the
    # directory operations each answer waits for are not.
    operations, passwords = _record_operations(monkeypatch)
    backend = authenticator(slapd, pool_size=1, **mode)
    seen = {}
    for account in ("carol", "nobody-here", "carol", "nobody-here"):  # the second of each counts
        operations.clear()
        result = await backend.authenticate(Credentials(account, SecretStr("wrong")))
        seen[account] = (list(operations), result.outcome)
    assert seen["carol"][1] is Outcome.REJECTED
    assert seen["nobody-here"][1] in (Outcome.NOT_MINE, Outcome.REJECTED)  # search: not mine
    assert seen["nobody-here"][0] == seen["carol"][0]
    if mode.get("mode") == "direct":
        return  # binding as the name is all direct mode can do
    # Not found, the name may be another backend's (htpasswd after LDAP): its password stays.
    passwords.clear()
    await backend.authenticate(Credentials("nobody-here", SecretStr("htpasswd-secret")))
    assert passwords
    assert "htpasswd-secret" not in passwords


async def test_an_unknown_name_another_backend_answers_for_costs_the_directory_one_search(
    slapd: Slapd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret_file: Path
) -> None:
    # htpasswd after LDAP takes its own time for unknown names (a dummy bcrypt check); the
    # directory's extra work for them was two round trips and a failed bind in its log.
    ldap = {
        "type": "ldap",
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "bind_password_file": str(secret_file),
        "user_base": PEOPLE,
    }
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.touch()
    chained = [ldap, {"type": "htpasswd", "path": str(htpasswd), "accounts": "[a-z-]+"}]
    settings = load_settings(
        overrides={"htpasswd": None, "realm": "http://auth.test/token", "auth_backends": chained}
    )
    chain = build_authentication(settings).authenticator
    assert chain is not None
    backend = chain.links[0].authenticator
    assert isinstance(backend, LdapAuthenticator)
    assert backend.others_after("local-admin")
    assert not backend.others_after("Local Admin")  # htpasswd does not take that name
    operations, _ = _record_operations(monkeypatch)
    for name in ("local-admin", "local-admin"):  # the second counts: bound as the service
        operations.clear()
        await backend.authenticate(Credentials(name, SecretStr("x")))
    assert operations == ["search"]
    await backend.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_empty_password_is_rejected_not_an_anonymous_bind(
    slapd: Slapd, mode: dict[str, Any]
) -> None:
    result = await authenticator(slapd, **mode).authenticate(creds("carol", ""))
    assert result.outcome is Outcome.REJECTED


async def test_search_mode_says_not_mine_for_unknown_accounts(slapd: Slapd) -> None:
    result = await authenticator(slapd).authenticate(creds("mallory", "whatever"))
    assert result.outcome is Outcome.NOT_MINE


async def test_direct_mode_cannot_tell_unknown_from_wrong(slapd: Slapd) -> None:
    # The server answers invalidCredentials for both; documented in the README.
    backend = authenticator(slapd, mode="direct", user_dn_template=f"uid={{account}},{PEOPLE}")
    result = await backend.authenticate(creds("mallory", "whatever"))
    assert result.outcome is Outcome.REJECTED


@pytest.mark.parametrize("account", ["*", "carol)(uid=*", "carol,ou=x", "c*"])
async def test_filter_and_dn_injection_finds_nobody(slapd: Slapd, account: str) -> None:
    search = await authenticator(slapd).authenticate(creds(account, PEOPLE_ENTRIES["carol"][0]))
    direct = await authenticator(
        slapd, mode="direct", user_dn_template=f"uid={{account}},{PEOPLE}"
    ).authenticate(creds(account, PEOPLE_ENTRIES["carol"][0]))
    assert search.outcome is Outcome.NOT_MINE
    assert direct.outcome is Outcome.REJECTED


async def test_ldaps_verifies_the_server_certificate(slapd: Slapd) -> None:
    good = authenticator(slapd, url=slapd.ldaps_url, ca_file=slapd.tls.ca)
    assert (await good.authenticate(CAROL)).groups == {"ci", "developers"}
    untrusted = authenticator(slapd, url=slapd.ldaps_url)  # system CAs do not know ours
    with pytest.raises(BackendUnavailableError, match="certificate verify failed"):
        await untrusted.authenticate(CAROL)


async def test_ldaps_checks_the_host_name(slapd: Slapd) -> None:
    # The certificate names localhost only; 127.0.0.1 is the same server under another name.
    wrong_name = slapd.ldaps_url.replace("localhost", "127.0.0.1")
    backend = authenticator(slapd, url=wrong_name, ca_file=slapd.tls.ca)
    with pytest.raises(BackendUnavailableError, match="IP address mismatch"):
        await backend.authenticate(CAROL)


async def test_start_tls(slapd: Slapd) -> None:
    url = slapd.url.replace("127.0.0.1", "localhost")
    backend = authenticator(slapd, url=url, start_tls=True, ca_file=slapd.tls.ca)
    assert (await backend.authenticate(CAROL)).outcome is Outcome.ACCEPTED
    untrusted = authenticator(slapd, url=url, start_tls=True)
    with pytest.raises(BackendUnavailableError):
        await untrusted.authenticate(CAROL)


async def test_wrong_service_password_is_an_outage_not_a_reject(slapd: Slapd) -> None:
    backend = authenticator(slapd, password="wrong")
    with pytest.raises(BackendUnavailableError, match="service account") as caught:
        await backend.authenticate(CAROL)
    assert "_LdapOutage" not in str(caught.value.cause)  # no class name of ours in the log


async def test_the_pool_reuses_connections(slapd: Slapd) -> None:
    backend = authenticator(slapd, pool_size=1)
    for account in ["carol", "dave", "carol", "erin"]:
        assert (await backend.authenticate(creds(account))).accepted
    assert (await backend.authenticate(creds("dave", "bad"))).outcome is Outcome.REJECTED
    assert (await backend.authenticate(creds("dave"))).accepted  # rebinds as service first
    assert len(backend._pool._idle) == 1  # one connection served them all
    await backend.aclose()


async def test_directory_down_is_503_and_back_is_200(
    tmp_path: Path, rsa_keys_dir: Path, secret_file: Path
) -> None:
    server = start_slapd(tmp_path / "private-slapd")  # this test stops it: not the shared one
    try:
        settings = load_settings(
            overrides={
                "keys_dir": str(rsa_keys_dir),
                "htpasswd": None,
                "realm": "http://auth.test/token",
                "state": {"path": str(tmp_path / "state.db")},
                "auth_backends": [
                    {
                        "type": "ldap",
                        "name": "corp-ldap",
                        "url": server.url,
                        "bind_dn": SERVICE_DN,
                        "bind_password_file": str(secret_file),
                        "user_base": PEOPLE,
                        "timeout": 2,
                    }
                ],
            }
        )
        params = {"service": settings.service, "scope": "repository:team/app:pull"}
        carol = ("carol", PEOPLE_ENTRIES["carol"][0])
        async with api_client(create_app(settings)) as client:
            assert (await client.get("/token", params=params, auth=carol)).status_code == 200
            server.stop()
            down = await client.get("/token", params=params, auth=carol)
            assert down.status_code == 503
            assert down.json()["error"] == "backend_unavailable"
            assert "corp-ldap" in down.json()["details"]
            assert down.headers["retry-after"].isdigit()
            wrong = await client.get("/token", params=params, auth=("carol", "wrong"))
            assert wrong.status_code == 503  # it cannot know the password is wrong: no 401
            anonymous = await client.get("/token", params=params)
            assert anonymous.status_code == 200  # no credentials: no backend asked
            server.start()
            back = await client.get("/token", params=params, auth=carol)
            assert back.status_code == 200, back.text
            refused = await client.get("/token", params=params, auth=("carol", "wrong"))
            assert refused.status_code == 401
    finally:
        server.stop()


class RecordingAuthorizer:
    """Grants nothing; remembers who asked (the ACL engine lives on another branch)."""

    def __init__(self) -> None:
        self.requesters: list[Requester] = []

    def authorize(self, requester: Requester, scopes: Sequence[Scope]) -> list[Scope]:
        self.requesters.append(requester)
        return [scope.with_actions(()) for scope in scopes]


async def test_a_local_account_cannot_be_reached_through_the_directory_by_its_case(
    slapd: Slapd,
    rsa_keys_dir: Path,
    secret_file: Path,
    tmp_path: Path,
) -> None:
    """A local break-glass `carol` before the directory, which has a carol too: `CAROL` with
    her directory password was refused by the users file (names as typed), then taken by the
    directory as `carol`: a token for the local account."""
    users = tmp_path / "admins.htpasswd"
    users.write_text(f"carol:{hash_password('local-admin-pw', rounds=4)}\n")
    chained = [
        {"type": "htpasswd", "name": "admins", "path": str(users)},
        {"type": "ldap", "name": "corp", "url": slapd.url, "bind_dn": SERVICE_DN,
         "bind_password_file": str(secret_file), "user_base": PEOPLE},
    ]  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"issuer": "i", "service": "registry.test", "keys_dir": str(rsa_keys_dir),
             "htpasswd": None, "auth_backends": chained, "realm": "http://auth.test/token",
             "state": {"backend": "none"}}
        )
    )  # fmt: skip
    settings = load_settings(config)
    service = TokenService.from_settings(settings)
    request = parse_token_request({"service": [settings.service]})
    directory_password = PEOPLE_ENTRIES["carol"][0]
    try:
        with pytest.raises(AuthenticationError) as refused:
            await service.issue(request, creds("CAROL", directory_password), None)
        assert refused.value.reason == "another spelling of an account an earlier backend holds"
        issued = await service.issue(request, creds("carol", "local-admin-pw"), None)
        assert issued.account == "carol"
        assert (
            await service.issue(request, creds("DAVE", PEOPLE_ENTRIES["dave"][0]), None)
        ).account == "dave"
    finally:
        await service.aclose()
    checked = subprocess.run(
        app_command("logins", "check", "--config", str(config), "--password-stdin", "CAROL"),
        input=directory_password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "corp: accepted as 'carol', an account backend admins holds: refused" in (checked.stdout)


@pytest.mark.parametrize("mode", MODES)
async def test_spellings_of_one_account_share_its_brute_force_counter(
    slapd: Slapd, mode: dict[str, Any], rsa_keys_dir: Path, secret_file: Path, tmp_path: Path
) -> None:
    """The directory takes `CAROL` and ` carol` as carol: counted as typed, each spelling had
    an allowance of its own, and a guesser got around the block on one account."""
    brute_force = {"account_ip_free": 2, "account_ip_block": 3, "ip_free": 40, "ip_block": 50}
    backend = {
        "type": "ldap", "url": slapd.url, "bind_dn": SERVICE_DN,
        "bind_password_file": str(secret_file), "user_base": PEOPLE, **mode,
    }  # fmt: skip
    settings = load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": None,
            "realm": "http://auth.test/token",
            "auth_backends": [backend],
            "brute_force": brute_force,
            "state": {"path": str(tmp_path / "state.db")},
        }
    )
    service = TokenService.from_settings(settings)
    request = parse_token_request({"service": [settings.service]})
    guesser, owner = ip_address("192.0.2.66"), ip_address("192.0.2.7")
    try:
        for typed in ("carol", "CAROL", " carol"):
            with pytest.raises(AuthenticationError):
                await service.issue(request, creds(typed, "guess"), guesser)
        with pytest.raises(TooManyAttemptsError):  # even the right password, spelled anew
            await service.issue(request, creds("Carol ", PEOPLE_ENTRIES["carol"][0]), guesser)
        assert (await service.issue(request, CAROL, owner)).account == "carol"
    finally:
        await service.aclose()


async def test_ldap_groups_reach_the_requester(
    slapd: Slapd, rsa_keys_dir: Path, secret_file: Path
) -> None:
    settings = load_settings(
        overrides={
            "keys_dir": str(rsa_keys_dir),
            "htpasswd": None,
            "realm": "http://auth.test/token",
            "auth_backends": [
                {
                    "type": "ldap",
                    "url": slapd.url,
                    "bind_dn": SERVICE_DN,
                    "bind_password_file": str(secret_file),
                    "user_base": PEOPLE,
                }
            ],
        }
    )
    loaded = TokenService.from_settings(settings)
    recorder = RecordingAuthorizer()
    service = TokenService(
        settings,
        loaded.keyring_source,
        authenticator=loaded.authenticator,
        authorizer=recorder,
    )
    request = parse_token_request({"service": [settings.service], "scope": ["repository:a/b:pull"]})
    issued = await service.issue(request, CAROL, ip_address("192.0.2.7"))
    await loaded.aclose()
    assert issued.account == "carol"
    (requester,) = recorder.requesters
    assert requester.account == "carol"
    assert requester.groups == {"ci", "developers"}
    assert str(requester.ip) == "192.0.2.7"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("typed", ["CAROL", " carol", "Carol "])
async def test_a_login_carries_the_directorys_spelling_of_the_account(
    slapd: Slapd, mode: dict[str, Any], typed: str
) -> None:
    """The directory compares names without case or outer spaces; the ACL does not. As typed,
    `CAROL` slipped past a rule written for `carol` (a deny on push, a group's members)."""
    backend = authenticator(slapd, **mode)
    result = await backend.authenticate(creds(typed, PEOPLE_ENTRIES["carol"][0]))
    await backend.aclose()
    assert result.outcome is Outcome.ACCEPTED
    assert result.account == "carol"


POSIX = {
    "groups_from": "search",
    "group_base": POSIX_GROUPS,
    "group_filter": "(memberUid={account})",
}


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(POSIX, id="search-then-bind"),
        pytest.param(
            {**POSIX, "mode": "direct", "user_dn_template": f"uid={{account}},{PEOPLE}"},
            id="direct-bind",
        ),
    ],
)
@pytest.mark.parametrize("typed", ["dave", "DAVE", " Dave"])
async def test_groups_are_looked_up_by_the_directorys_spelling_of_the_account(
    slapd: Slapd, mode: dict[str, Any], typed: str
) -> None:
    """A posixGroup's memberUid is compared case-sensitively: looked up as typed, `DAVE` (who
    binds as dave) was in none of dave's groups, and got past a deny written for one."""
    backend = authenticator(slapd, **mode)
    result = await backend.authenticate(creds(typed, PEOPLE_ENTRIES["dave"][0]))
    await backend.aclose()
    assert result.outcome is Outcome.ACCEPTED
    assert (result.account, result.groups) == ("dave", frozenset(PEOPLE_ENTRIES["dave"][1]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("password", ["a\tb", "\x01", "\u00ad"])
async def test_a_password_saslprep_refuses_is_a_wrong_password_not_an_outage(
    slapd: Slapd, mode: dict[str, Any], password: str
) -> None:
    """ldap3 refuses such a password before sending it; it was a 503 that emptied the pool."""
    backend = authenticator(slapd, pool_size=1, **mode)
    assert (await backend.authenticate(creds("carol"))).accepted
    result = await backend.authenticate(creds("carol", password))
    assert result.outcome is Outcome.REJECTED
    assert (await backend.authenticate(creds("dave"))).accepted  # the service rebinds
    assert len(backend._pool._idle) == 1  # the one connection survived
    await backend.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_an_empty_account_is_rejected(slapd: Slapd, mode: dict[str, Any]) -> None:
    result = await authenticator(slapd, **mode).authenticate(creds("", "some-password"))
    assert result.outcome is Outcome.REJECTED


async def test_an_entry_without_the_account_attribute_is_refused_and_logged(
    slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    backend = authenticator(slapd, account_attribute="mail")  # the test people have no mail
    result = await backend.authenticate(creds("carol"))
    await backend.aclose()
    # Not "the password is wrong" (it is right), nor counted as a guess (GuardedLogin).
    assert result.outcome is Outcome.UNNAMED
    assert f"LDAP: no mail in uid=carol,{PEOPLE}" in caplog.text


TRICKLED = [
    pytest.param("port", "ldap://127.0.0.1:{}", {}, id="search-then-bind"),
    pytest.param("port", "ldap://127.0.0.1:{}", MODES[2].values[0], id="direct-bind"),
    pytest.param("tls_port", "ldaps://localhost:{}", {}, id="ldaps"),
    pytest.param("port", "ldap://localhost:{}", {"start_tls": True}, id="starttls"),
]


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "opening"])
@pytest.mark.parametrize(("port", "url", "mode"), TRICKLED)
async def test_a_directory_trickling_its_answers_is_cut_off_at_twice_the_timeout(
    slapd: Slapd, port: str, url: str, mode: dict[str, Any], pooled: bool
) -> None:
    """Every read gets a byte within `timeout`, so ldap3's own read timeout never fires: the
    whole check is bounded instead (on a pooled connection, or while a new one opens: TCP,
    TLS), and the thread and the connection are freed."""
    with TrickleProxy(("127.0.0.1", getattr(slapd, port)), delay=0.3) as proxy:
        backend = authenticator(
            slapd, url=url.format(proxy.port), ca_file=slapd.tls.ca, timeout=1, pool_size=1, **mode
        )
        if pooled:
            assert (await backend.authenticate(CAROL)).accepted
        proxy.trickling.set()
        started = time.monotonic()
        # (A TLS handshake is bounded by ldap3's connect timeout already.)
        bounded = "no whole answer within 2 s|handshake operation timed out"
        with pytest.raises(BackendUnavailableError, match=bounded):
            await backend.authenticate(CAROL)
        assert time.monotonic() - started < 3.5  # the answers alone would take ~30 s or more
        assert not backend._pool._idle  # the cut connection is not handed out again
        proxy.trickling.clear()
        assert (await backend.authenticate(creds("dave"))).accepted  # the one slot is free


async def test_a_check_that_ends_past_its_bound_keeps_its_answer_but_not_its_connection(
    slapd: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound passed after the last read: the answer stands, but the connection may have
    been shut down meanwhile, so the pool must not hand it out again (a login would fail on it
    and the pool drop every idle connection)."""
    backend = authenticator(slapd, timeout=0.5, pool_size=1)
    decide = backend._decide

    def slow_decide(*args: Any) -> Any:
        answer = decide(*args)
        time.sleep(1.3)  # past the bound (2 x 0.5 s), with no read left to fail
        return answer

    monkeypatch.setattr(backend, "_decide", slow_decide)
    assert (await backend.authenticate(CAROL)).accepted
    assert not backend._pool._idle  # dropped, not pooled
    monkeypatch.setattr(backend, "_decide", decide)
    assert (await backend.authenticate(creds("dave"))).accepted
    assert len(backend._pool._idle) == 1  # a check within its bound pools its connection
