"""Named security regressions: hostile bytes in credentials and scopes, header/log injection,
oversized input, key identification from the request, forged algorithms, login timing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.unit.hardening.env import Env, hardened_env

pytestmark = pytest.mark.anyio
SERVICE = {"service": "registry.test"}


@pytest.fixture
async def env(tmp_path: Path, rsa_keys_dir: Path) -> AsyncIterator[Env]:
    async with hardened_env(tmp_path, rsa_keys_dir) as env:
        yield env


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize(
    "raw",
    [b"alice:\xff\xfe", b"\xc3(:pw", b"alice:pw\x00", b"ali\x00ce:pw", b"eve\r\nX-Evil: 1:pw"],
    ids=["non-utf8-password", "non-utf8-user", "nul-password", "nul-user", "crlf-user"],
)
async def test_hostile_bytes_in_basic_credentials_get_400(env: Env, raw: bytes) -> None:
    response = await env.client.get("/token", params=SERVICE, headers=_basic(raw))
    assert response.status_code == 400
    assert response.json()["parameter"] == "Authorization"


@pytest.mark.parametrize(
    "header",
    ["Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "Digest username=x", "Negotiate YII="],
)
async def test_credentials_of_another_scheme_get_400_not_an_anonymous_token(
    env: Env, header: str
) -> None:
    """Taken for anonymous, the client's credentials were dropped without a word."""
    response = await env.client.get("/token", params=SERVICE, headers={"Authorization": header})
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == "Authorization"
    scheme, secret = header.split(maxsplit=1)
    assert f"takes Basic credentials (or none), not '{scheme}'" in body["details"]
    assert secret not in response.text


@pytest.mark.parametrize(
    ("header", "secret"),
    [
        ("Ym9iOmh1bnRlcjI=", "Ym9iOm"),
        ("ghp_0123456789abcdefghij", "ghp_01"),
        ("Basic\tYm9iOmh1bnRlcjI=", "Ym9iOm"),
        ("Bas1c eA==", "Bas1c"),
    ],
    ids=["bare-base64", "raw-token", "tab-after-basic", "misspelled"],
)
async def test_a_header_without_a_known_scheme_is_not_written_back(
    env: Env, header: str, secret: str
) -> None:
    """What precedes the first space may be the secret itself: never named back or logged."""
    response = await env.client.get("/token", params=SERVICE, headers={"Authorization": header})
    assert response.status_code == 400
    assert "not another (a refresh token goes in a POST" in response.json()["details"]
    assert secret not in response.text
    assert secret not in env.audit_path.read_text(encoding="ascii")


async def test_an_unknown_grant_type_is_not_written_back_nor_to_the_audit_log(env: Env) -> None:
    """A client that put its password in grant_type: it reaches neither the answer nor the
    audit log (known OAuth grant types are named back: client_credentials, ...)."""
    form = {"grant_type": "AlicePassw0rd!", "username": "alice", **SERVICE}
    response = await env.client.post("/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert "AlicePassw0rd!" not in response.text
    assert env.audit()[-1]["outcome"] == "invalid"
    assert "AlicePassw0rd!" not in env.audit_path.read_text(encoding="ascii")


async def test_two_authorization_headers_get_400(env: Env) -> None:
    """A proxy reading the last one and this server the first would disagree on who logs in."""
    alice, bob = _basic(b"alice:pw")["Authorization"], _basic(b"bob:wrong")["Authorization"]
    for first, second in ((alice, bob), (bob, alice)):
        headers = [("Authorization", first), ("Authorization", second)]
        response = await env.client.get("/token", params=SERVICE, headers=headers)
        assert response.status_code == 400
        assert response.json()["details"] == "Authorization: sent more than once"


@pytest.mark.parametrize(
    "query",
    [
        "service=registry.test&scope=repository:a%FF/b:pull",
        "service=registry.test&scope=repository:a%00b:pull",
        "service=registry.test&scope=repository:a/b:pu%0D%0All",
        "service=registry.test%00",
        "service=registry.test&account=eve%0D%0ASet-Cookie:x",
    ],
    ids=["non-utf8-scope", "nul-scope", "crlf-action", "nul-service", "crlf-account"],
)
async def test_hostile_bytes_in_query_parameters_get_400(env: Env, query: str) -> None:
    response = await env.client.get(f"/token?{query}")
    assert response.status_code == 400, response.text
    assert "error" in response.json()


@pytest.mark.parametrize("query", ["service=%FF", "service=registry.test&account=%C3%28"])
async def test_percent_encoded_bytes_that_are_not_utf8_are_named_as_such(
    env: Env, query: str
) -> None:
    """Not decoded into U+FFFD (`unknown service '\ufffd'`)."""
    response = await env.client.get(f"/token?{query}")
    assert response.status_code == 400
    assert response.json()["details"] == "the query string's percent-encoded bytes are not UTF-8"
    assert response.json()["parameter"] == "query"


async def test_a_post_body_with_percent_encoded_bytes_that_are_not_utf8_is_a_400(env: Env) -> None:
    body = "grant_type=password&service=registry.test&client_id=c&username=alice&password=%FF"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await env.client.post("/token", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error_description"] == "the POST body is not UTF-8"


async def test_crlf_in_an_account_name_reaches_no_header_and_no_log_line_raw(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    form = {
        "grant_type": "password",
        "username": "eve\r\nSet-Cookie: pwned=1",
        "password": "x",
        "service": "registry.test",
        "client_id": "t",
    }
    response = await env.client.post("/token", data=form)
    assert response.status_code in (400, 401)
    assert "set-cookie" not in response.headers
    assert all("\n" not in value and "\r" not in value for value in response.headers.values())
    assert all("\r" not in record.getMessage() for record in caplog.records)
    assert "\r" not in env.audit_path.read_text()
    # The same name through Basic credentials is refused before any log line names it.
    basic = await env.client.get("/token", params=SERVICE, headers=_basic(b"eve\r\nX: 1:pw"))
    assert basic.status_code == 400


async def test_a_long_account_name_is_cut_in_the_log_lines_of_failed_logins(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Basic credentials may carry a name of kilobytes (within the Authorization limit): every
    failed try wrote all of it to the log."""
    caplog.set_level(logging.INFO)
    name = "u" * 3000
    response = await env.client.get("/token", params=SERVICE, auth=(name, "wrong"))
    assert response.status_code == 401
    failed = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert failed
    assert all(len(line) < 300 for line in failed), failed
    assert f"'{'u' * 128}...'" in failed[0]


@pytest.mark.parametrize(
    "params",
    [
        {"scope": " ".join(f"repository:r{i}/app:pull" for i in range(65))},
        {"scope": "repository:" + "a" * 1100 + ":pull"},
        {"account": "a" * 600},
    ],
    ids=["65-scopes", "scope-1100-chars", "account-600-chars"],
)
async def test_oversized_parameters_get_400(env: Env, params: dict[str, str]) -> None:
    response = await env.client.get("/token", params={**SERVICE, **params})
    assert response.status_code == 400
    assert len(response.text) < 1000  # the error names the problem, not the whole input


async def test_kid_and_x5c_are_never_taken_from_the_request(env: Env) -> None:
    response = await env.client.get(
        "/token",
        params={**SERVICE, "kid": "../../evil", "x5c": "MIIevil", "alg": "none", "jku": "x"},
        headers={"kid": "evil", "x5c": "MIIevil"},
        auth=("alice", "alice-pw"),
    )
    assert response.status_code == 200
    header = jwt.get_unverified_header(response.json()["token"])
    active = env.service.keyring.active
    assert header["kid"] == active.kid
    assert header["x5c"] == [active.x5c]
    assert header["alg"] == active.algorithm.value
    assert set(header) <= {"typ", "alg", "kid", "x5c"}


async def _published_key(env: Env) -> tuple[bytes, str]:
    jwks = (await env.client.get("/.well-known/jwks.json")).json()
    public_key = jwt.PyJWK(jwks["keys"][0]).key
    pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return pem, env.service.keyring.active.algorithm.value


def _forge(header: dict[str, str], claims: dict[str, object], sign: bytes | None) -> str:
    def part(data: dict[str, object] | dict[str, str]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signing_input = part(header) + b"." + part(claims)
    signature = b""
    if sign is not None:
        signature = base64.urlsafe_b64encode(
            hmac.new(sign, signing_input, hashlib.sha256).digest()
        ).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


async def test_alg_none_and_hs256_with_the_public_key_are_rejected(env: Env) -> None:
    pem, algorithm = await _published_key(env)
    good = (await env.login("alice", "alice-pw")).json()["token"]
    options = {"audience": "registry.test", "issuer": "test issuer", "leeway": 10**10}
    claims = jwt.decode(good, pem, algorithms=[algorithm], **options)  # the real one verifies
    unsigned = _forge({"alg": "none", "typ": "JWT"}, claims, None)
    confused = _forge({"alg": "HS256", "typ": "JWT"}, claims, pem)
    for forged in (unsigned, confused):
        with pytest.raises(jwt.InvalidTokenError):
            jwt.decode(forged, pem, algorithms=[algorithm], **options)


async def test_unknown_user_and_wrong_password_take_the_same_time(
    tmp_path: Path, rsa_keys_dir: Path
) -> None:
    """A timing difference would tell an attacker which accounts exist. Measured as the CPU
    time the process spends (the bcrypt check runs in one of its threads): the work each answer
    costs, which the wall clock of a loaded machine (another test run beside it) blurred."""
    async with hardened_env(tmp_path, rsa_keys_dir, brute_force={"enabled": False}) as env:
        # Cost 10: tens of milliseconds per check, well above the noise of the test client.
        hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=10)).decode()
        assert env.settings.htpasswd is not None
        env.settings.htpasswd.write_text(f"alice:{hashed}\n")
        for reloadable in env.service.reloadables:
            reloadable.reload()
        samples: dict[str, list[float]] = {"nobody": [], "alice": []}
        for _ in range(9):
            for account, times in samples.items():
                started = time.process_time()
                response = await env.login(account, "wrong")
                times.append(time.process_time() - started)
                assert response.status_code == 401
        unknown, wrong = (statistics.median(samples[a]) for a in ("nobody", "alice"))
        assert abs(unknown - wrong) < 0.35 * wrong, (unknown, wrong)
