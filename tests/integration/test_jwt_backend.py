"""The `jwt` backend against a real HTTP server playing the OpenID Connect issuer (discovery
document, JWKS), and end to end: skopeo pushes to docker-registry 2.8 with a CI job's ID token
as its password, and containerd's POST password grant carries one."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm
from pydantic import SecretStr

from app.authn.base import AuthResult, Credentials, Outcome
from app.authn.jwt_tokens import (
    FAILURE_COOLDOWN,
    MAX_STALE,
    UNKNOWN_KID_REFETCH,
    IssuerKeys,
    JwtAuthenticator,
)
from app.backend_settings import JwtBackend
from app.errors import BackendUnavailableError
from tests.fake_clock import FakeClock
from tests.integration.support.oci import OciImage
from tests.integration.support.oidc_issuer import OidcIssuer, start_oidc_issuer
from tests.integration.support.skopeo import Creds, Skopeo
from tests.integration.support.stack import Stack

pytestmark = pytest.mark.anyio
AUDIENCE = "registry.test"
JOB = {"aud": AUDIENCE, "namespace_path": "team", "project_path": "team/app", "sub": "project:1"}


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    server = start_oidc_issuer()
    yield server
    server.stop()


def settings(issuer: OidcIssuer, **options: Any) -> JwtBackend:
    values: dict[str, Any] = {
        "type": "jwt",
        "name": "gitlab-ci",
        "issuer": issuer.url,
        "audience": AUDIENCE,
        "claims": {"namespace_path": "team"},
        "account_claim": "project_path",
        "account_prefix": "ci:",
        "groups_claim": "namespace_path",
        "timeout": 2,
        **options,
    }
    return JwtBackend(**values)


def backend(issuer: OidcIssuer, clock: FakeClock | None = None, **options: Any) -> JwtAuthenticator:
    config = settings(issuer, **options)
    return JwtAuthenticator(config, IssuerKeys(config, clock=clock or FakeClock()))


async def login(auth: JwtAuthenticator, password: str) -> AuthResult:
    return await auth.authenticate(Credentials("ci", SecretStr(password)))


async def test_a_jobs_token_logs_in_as_its_project_with_its_groups(issuer: OidcIssuer) -> None:
    result = await login(backend(issuer), issuer.token(**JOB))
    assert (result.outcome, result.account, result.groups) == (
        Outcome.ACCEPTED,
        "ci:team/app",
        frozenset({"team"}),
    )
    assert issuer.requests == ["/.well-known/openid-configuration", "/keys"]
    await login(backend(issuer, jwks_url=issuer.url + "/keys"), issuer.token(**JOB))
    assert issuer.requests[2:] == ["/keys"]  # with jwks_url: no discovery


async def test_an_ec_key_and_a_list_of_groups(issuer: OidcIssuer) -> None:
    issuer.add_key("ec", ec.generate_private_key(ec.SECP256R1()))
    token = issuer.token("ec", **{**JOB, "groups": ["team", "release"]})
    result = await login(backend(issuer, groups_claim="groups"), token)
    assert (result.outcome, result.groups) == (Outcome.ACCEPTED, frozenset({"team", "release"}))


async def test_a_password_or_another_issuers_token_is_not_this_backends(
    issuer: OidcIssuer,
) -> None:
    auth = backend(issuer)
    assert (await login(auth, "hunter2")).outcome is Outcome.NOT_MINE
    assert (await login(auth, "eyJ.not.json")).outcome is Outcome.NOT_MINE
    other = jwt.encode({**JOB, "iss": "https://elsewhere"}, issuer.keys["k1"], "RS256")
    assert (await login(auth, other)).outcome is Outcome.NOT_MINE
    assert issuer.requests == []  # none made us ask the issuer


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"aud": "another.registry"}, id="another-audience"),
        pytest.param({"namespace_path": "intruders"}, id="claim-of-another-value"),
        pytest.param({"namespace_path": None}, id="claim-missing"),
        pytest.param({"project_path": "robot$ci", "prefix": ""}, id="a-robots-name"),
        pytest.param({"project_path": " team/app"}, id="outer-space"),
        pytest.param({"project_path": "team/\napp"}, id="line-break"),
        pytest.param({"project_path": 7}, id="account-not-text"),
        pytest.param({"lifetime": 2 * 86400}, id="meant-to-live-too-long"),
    ],
)
async def test_a_token_that_does_not_hold_up_is_a_wrong_password(
    issuer: OidcIssuer, change: dict[str, Any]
) -> None:
    lifetime, prefix = change.pop("lifetime", 300), change.pop("prefix", "ci:")
    claims = {k: v for k, v in {**JOB, **change}.items() if v is not None}
    auth = backend(issuer, account_prefix=prefix)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED  # the control
    result = await login(auth, issuer.token(lifetime=lifetime, **claims))
    assert result.outcome is Outcome.REJECTED


async def test_an_expired_token_of_the_issuer_is_expired_not_a_guess(issuer: OidcIssuer) -> None:
    """Counted as a wrong password under the shared name (`ci`), a job's stale token blocked
    every job of its runner; it guesses nothing: its signature holds."""
    auth = backend(issuer)
    assert (await login(auth, issuer.token(lifetime=-120, **JOB))).outcome is Outcome.EXPIRED
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = issuer.token(key=forger, lifetime=-120, **JOB)  # kid k1, another key
    assert (await login(auth, forged)).outcome is Outcome.REJECTED  # forged: a guess


async def test_times_must_be_numbers(issuer: OidcIssuer) -> None:
    """PyJWT takes exp "4000000000" (a string) as a time: it would pass max_lifetime."""
    auth = backend(issuer)
    now = int(time.time())
    for times in ({"exp": str(now + 300)}, {"iat": str(now)}, {"nbf": str(now)}):
        claims = {**JOB, "iss": issuer.url, "iat": now, "exp": now + 300, **times}
        token = jwt.encode(claims, issuer.keys["k1"], "RS256", headers={"kid": "k1"})
        assert (await login(auth, token)).outcome is Outcome.REJECTED, times
    fine = {**JOB, "iss": issuer.url, "iat": now, "exp": now + 300}
    token = jwt.encode(fine, issuer.keys["k1"], "RS256", headers={"kid": "k1"})
    assert (await login(auth, token)).outcome is Outcome.ACCEPTED


async def test_forged_tokens_are_refused(issuer: OidcIssuer) -> None:
    auth = backend(issuer)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed_elsewhere = issuer.token(key=forger, **JOB)  # kid k1, another key
    assert (await login(auth, signed_elsewhere)).outcome is Outcome.REJECTED
    claims = {**JOB, "iss": issuer.url, "iat": 1, "exp": 4_000_000_000}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    assert (await login(auth, unsigned)).outcome is Outcome.REJECTED
    # HS256 keyed with the issuer's public key (the algorithm confusion attack).
    public = issuer.jwks()["keys"][0]
    hs = jwt.encode(claims, public["n"].encode(), algorithm="HS256", headers={"kid": "k1"})
    assert (await login(auth, hs)).outcome is Outcome.REJECTED
    # The genuine token still passes: the refusals were the signatures'.
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED


async def test_a_key_used_with_an_algorithm_not_its_own_is_a_wrong_password(
    issuer: OidcIssuer,
) -> None:
    """An RSA key named by an ES256 token, an EC key by an RS256 one, and an RS256 key by an
    RS384 token: refused (401), not an outage (was a 503)."""
    issuer.add_key("ec", ec.generate_private_key(ec.SECP256R1()))
    auth = backend(issuer, algorithms=["RS256", "RS384", "ES256"])
    forger_ec = ec.generate_private_key(ec.SECP256R1())
    as_es256 = issuer.token("k1", key=forger_ec, **JOB)  # header: ES256, kid k1 (RSA)
    assert (await login(auth, as_es256)).outcome is Outcome.REJECTED
    as_rs256 = issuer.token("ec", key=issuer.keys["k1"], **JOB)  # RS256, kid ec (EC)
    assert (await login(auth, as_rs256)).outcome is Outcome.REJECTED
    rs384 = issuer.token("k1", algorithm="RS384", **JOB)  # k1 is published as RS256
    assert (await login(auth, rs384)).outcome is Outcome.REJECTED
    assert (await login(auth, issuer.token("ec", **JOB))).outcome is Outcome.ACCEPTED


async def test_an_ec_key_verifies_only_its_curves_algorithm(issuer: OidcIssuer) -> None:
    """ES384 is P-384 (RFC 7518 §3.4): a P-256 key published without `alg` does not verify an
    ES384 signature made with it."""
    issuer.add_key("ec", ec.generate_private_key(ec.SECP256R1()))
    published = [{k: v for k, v in jwk.items() if k != "alg"} for jwk in issuer.jwks()["keys"]]
    issuer.answers["/keys"] = (200, json.dumps({"keys": published}).encode(), {})
    auth = backend(issuer, algorithms=["ES256", "ES384"])
    es384 = _es384_on_p256(issuer, issuer.keys["ec"], "ec")
    assert (await login(auth, es384)).outcome is Outcome.REJECTED
    assert (await login(auth, issuer.token("ec", **JOB))).outcome is Outcome.ACCEPTED


def _es384_on_p256(issuer: OidcIssuer, key: Any, kid: str) -> str:
    """What PyJWT refuses to make: an ES384 signature with a P-256 key."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "ES384", "kid": kid, "typ": "JWT"}).encode())
    claims = {**JOB, "iss": issuer.url, "iat": now, "exp": now + 300}
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA384())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def test_keys_not_for_signing_are_not_used(issuer: OidcIssuer) -> None:
    keys = issuer.jwks()["keys"]
    encryption = {**keys[0], "kid": "enc", "use": "enc"}
    symmetric = {"kty": "oct", "kid": "oct", "k": base64.urlsafe_b64encode(b"s" * 32).decode()}
    junk: list[Any] = ["junk", {"kty": "RSA", "kid": "broken", "n": "AQAB", "e": 7}]
    body = json.dumps({"keys": [*keys, encryption, symmetric, *junk]}).encode()
    issuer.answers["/keys"] = (200, body, {})
    clock = FakeClock()
    auth = backend(issuer, clock)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    clock.now += UNKNOWN_KID_REFETCH  # an unknown kid fetches again: still not among them
    enc_token = issuer.token("enc", key=issuer.keys["k1"], **JOB)  # the same RSA key, use enc
    with pytest.raises(BackendUnavailableError):  # no such signing key published: 503
        await login(auth, enc_token)
    assert issuer.requests.count("/keys") == 2
    hs = jwt.encode({**JOB, "iss": issuer.url, "iat": 1, "exp": 2}, b"s" * 32, "HS256")
    assert (await login(auth, hs)).outcome is Outcome.REJECTED


async def test_unknown_key_ids_fetch_the_keys_again_at_most_every_30_s(
    issuer: OidcIssuer,
) -> None:
    """Such a token gets a 503 with Retry-After, never a wrong password, before and after the
    fetch: after a key rotation (an issuer may sign with a key before publishing it) a CI
    runner's logins would count towards its block (brute_force)."""
    clock = FakeClock()
    auth = backend(issuer, clock)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for n in range(20):
        clock.now += 1
        token = issuer.token(f"made-up-{n}", key=stranger, **JOB)
        with pytest.raises(BackendUnavailableError) as caught:
            await login(auth, token)
        assert caught.value.retry_after == UNKNOWN_KID_REFETCH - (n + 1)
    assert issuer.requests.count("/keys") == 1
    clock.now += UNKNOWN_KID_REFETCH
    issuer.add_key("new")  # the issuer published a new key in the meantime
    assert (await login(auth, issuer.token("new", **JOB))).outcome is Outcome.ACCEPTED
    assert issuer.requests.count("/keys") == 2
    clock.now += UNKNOWN_KID_REFETCH
    made_up = issuer.token("made-up", key=stranger, **JOB)
    with pytest.raises(BackendUnavailableError) as caught:  # asked: not (yet) theirs
        await login(auth, made_up)
    assert caught.value.retry_after == UNKNOWN_KID_REFETCH
    assert issuer.requests.count("/keys") == 3


async def test_a_kid_in_the_log_is_escaped(
    issuer: OidcIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    auth = backend(issuer)
    forged = "x\n2026-11-29 INFO app.audit granted everything to admin" + "y" * 200
    token = issuer.token(**JOB, headers={"kid": forged})
    with (
        caplog.at_level(logging.INFO, logger="app.authn.jwt_tokens"),
        pytest.raises(BackendUnavailableError),
    ):
        await login(auth, token)
    lines = [record.getMessage() for record in caplog.records]
    assert lines, "the refusal is logged"
    assert all("\n" not in line and "y" * 100 not in line for line in lines), lines


async def test_concurrent_first_logins_share_one_fetch(issuer: OidcIssuer) -> None:
    auth = backend(issuer)
    tokens = [issuer.token(**{**JOB, "sub": f"job-{n}"}) for n in range(20)]
    results = await asyncio.gather(*(login(auth, token) for token in tokens))
    assert {result.outcome for result in results} == {Outcome.ACCEPTED}
    assert issuer.requests == ["/.well-known/openid-configuration", "/keys"]


async def test_known_keys_verify_while_the_issuer_hangs(issuer: OidcIssuer) -> None:
    """Once its keys are old, a login whose key is known does not wait for the issuer: the
    fetch goes on in the background. Tokens with made-up key ids wait for it; they do not
    hold the others up."""
    clock = FakeClock()
    auth = backend(issuer, clock)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    clock.now += 301  # keys_cache (300) is over
    issuer.hold = threading.Event()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    made_up = [asyncio.ensure_future(login(auth, issuer.token("nope", key=stranger, **JOB)))]
    known = await asyncio.wait_for(login(auth, issuer.token(**JOB)), timeout=1.5)
    assert known.outcome is Outcome.ACCEPTED
    assert not made_up[0].done()  # still waiting for the issuer, which has not answered
    issuer.hold.set()
    with pytest.raises(BackendUnavailableError):  # fetched: still not among the keys
        await made_up[0]


async def test_the_issuer_down_is_an_outage_and_then_it_works_again(issuer: OidcIssuer) -> None:
    clock = FakeClock()
    auth = backend(issuer, clock)
    issuer.answers["/keys"] = (500, b"{}", {})
    with pytest.raises(BackendUnavailableError):
        await login(auth, issuer.token(**JOB))
    asked = len(issuer.requests)
    with pytest.raises(BackendUnavailableError):  # not a wrong password, and not asked again
        await login(auth, issuer.token(**JOB))
    assert len(issuer.requests) == asked
    del issuer.answers["/keys"]
    clock.now += FAILURE_COOLDOWN
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED


async def test_keys_in_hand_go_on_verifying_while_the_issuer_is_down(
    issuer: OidcIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    auth = backend(issuer, clock)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    issuer.answers["/keys"] = (503, b"", {})
    clock.now += 3600
    with caplog.at_level(logging.WARNING, logger="app.authn.jwt_tokens"):
        for _ in range(3):
            assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
            await asyncio.sleep(0.2)  # the background fetch fails meanwhile
    assert issuer.requests.count("/keys") == 2  # one retry, then the cooldown
    assert any("still verify" in record.getMessage() for record in caplog.records)
    with pytest.raises(BackendUnavailableError):  # a key it never had: it cannot tell
        await login(auth, issuer.token("new-kid", key=issuer.keys["k1"], **JOB))


@pytest.mark.parametrize(
    ("path", "answer", "why"),
    [
        pytest.param("/keys", (302, b"", {"Location": "/elsewhere"}), "HTTP 302", id="redirect"),
        pytest.param("/keys", (200, b" " * 70_000 + b"{}", {}), "larger than", id="too-large"),
        pytest.param("/keys", (200, b"[1]", {}), "not a JSON object", id="not-an-object"),
        pytest.param("/keys", (200, b'{"keys": []}', {}), "no usable", id="no-keys"),
        pytest.param(
            "/.well-known/openid-configuration",
            (200, b'{"issuer": "https://else.example", "jwks_uri": "https://x/k"}', {}),
            "its `issuer` is not",
            id="discovery-of-another-issuer",
        ),
        pytest.param(
            "/.well-known/openid-configuration",
            (200, b'{"issuer": "ISSUER", "jwks_uri": "http://192.0.2.1/keys"}', {}),
            "jwks_uri",
            id="keys-in-the-clear-elsewhere",
        ),
    ],
)
async def test_a_bad_answer_from_the_issuer_is_an_outage_that_says_why(
    issuer: OidcIssuer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    answer: tuple[int, bytes, dict[str, str]],
    why: str,
) -> None:
    status, body, headers = answer
    issuer.answers[path] = (status, body.replace(b"ISSUER", issuer.url.encode()), headers)
    with (
        caplog.at_level(logging.WARNING, logger="app.authn.jwt_tokens"),
        pytest.raises(BackendUnavailableError),
    ):
        await login(backend(issuer), issuer.token(**JOB))
    assert any(why in record.getMessage() for record in caplog.records), caplog.text
    assert "/elsewhere" not in issuer.requests


async def test_a_proxy_in_the_environment_is_not_used(
    issuer: OidcIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy from the environment could hand us keys of its own: the forger's proxy would
    make its tokens good."""
    forger = start_oidc_issuer()
    try:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            monkeypatch.setenv(name, forger.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        auth = backend(issuer)
        forged = issuer.token(key=forger.keys["k1"], **JOB)  # kid k1, the forger's key
        assert (await login(auth, forged)).outcome is Outcome.REJECTED
        assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
        assert forger.requests == []
    finally:
        forger.stop()


def test_skopeo_pushes_with_a_ci_jobs_id_token(
    stack_factory: Callable[..., Stack],
    skopeo: Skopeo,
    make_image: Callable[..., OciImage],
    issuer: OidcIssuer,
) -> None:
    jwt_backend = {
        "type": "jwt",
        "name": "gitlab-ci",
        "accounts": "ci",
        "issuer": issuer.url,
        "audience": AUDIENCE,
        "claims": {"namespace_path": "team"},
        "account_claim": "project_path",
    }
    stack = stack_factory(users=None, extra_settings={"auth_backends": [jwt_backend]})
    image = make_image("1.0")
    job = Creds("ci", issuer.token(**JOB))
    pushed = skopeo.copy(image.ref, stack.registry.ref("team/app", "1.0"), dest_creds=job)
    assert pushed.ok, f"{pushed}\n{stack.logs()}"
    outsider = Creds("ci", issuer.token(**{**JOB, "namespace_path": "intruders"}))
    refused = skopeo.copy(image.ref, stack.registry.ref("team/app", "2.0"), dest_creds=outsider)
    assert not refused.ok
    assert '"account":"team/app"' in stack.auth.log().replace(" ", "")
    # containerd's POST password grant: the ID token (longer than any password) as password.
    token = issuer.token(**{**JOB, "padding": "p" * 1500})
    assert 2000 < len(token) < 4096
    form = {
        "grant_type": "password",
        "service": stack.auth.service,
        "client_id": "containerd-client",
        "username": "ci",
        "password": token,
        "scope": "repository:team/app:pull",
    }
    answer = httpx.post(stack.auth.realm, data=form, timeout=10)
    assert answer.status_code == 200, answer.text
    granted = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
    assert granted["sub"] == "team/app"


async def test_an_issuer_trickling_its_answer_is_cut_at_twice_the_timeout(
    issuer: OidcIssuer,
) -> None:
    """httpx's timeout bounds each read: a byte every 20 ms would hold the fetch (and every
    login waiting for it) for as long as the issuer likes."""
    issuer.trickle = 0.02  # the keys take ~10 s this way
    auth = backend(issuer, timeout=0.5)
    with pytest.raises(BackendUnavailableError):
        await asyncio.wait_for(login(auth, issuer.token(**JOB)), timeout=5)


async def test_a_client_leaving_does_not_cancel_the_fetch_others_wait_for(
    issuer: OidcIssuer,
) -> None:
    auth = backend(issuer)
    issuer.hold = threading.Event()
    leaving = asyncio.ensure_future(login(auth, issuer.token(**JOB)))
    staying = asyncio.ensure_future(login(auth, issuer.token(**JOB)))
    await asyncio.sleep(0.2)  # both wait for the one fetch
    leaving.cancel()
    await asyncio.sleep(0.1)
    issuer.hold.set()
    assert (await asyncio.wait_for(staying, timeout=5)).outcome is Outcome.ACCEPTED
    assert issuer.requests.count("/keys") == 1


async def test_keys_the_issuer_has_not_confirmed_for_a_day_no_longer_verify(
    issuer: OidcIssuer,
) -> None:
    clock = FakeClock()
    auth = backend(issuer, clock)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    issuer.answers["/keys"] = (503, b"", {})
    clock.now += MAX_STALE - 10
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    await asyncio.sleep(0.2)  # the background fetch fails
    clock.now += FAILURE_COOLDOWN + 10
    with pytest.raises(BackendUnavailableError):
        await login(auth, issuer.token(**JOB))


async def test_keys_of_two_types_may_share_a_key_id(issuer: OidcIssuer) -> None:
    """RFC 7517 §4.5: the same kid for an RSA and an EC key; each verifies its own tokens."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = issuer.jwks()["keys"]
    shared = {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "k1", "alg": "ES256"}
    issuer.answers["/keys"] = (200, json.dumps({"keys": [*keys, shared]}).encode(), {})
    auth = backend(issuer)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED  # RS256
    es256 = issuer.token("k1", key=ec_key, **JOB)
    assert (await login(auth, es256)).outcome is Outcome.ACCEPTED


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        pytest.param({"exp": 10**400}, "a huge exp", id="huge-exp"),
        pytest.param({"iat": None}, "no iat", id="no-iat"),
        pytest.param({"project_path": "p" * 254}, "an account over 256", id="long-account"),
    ],
)
async def test_odd_claims_are_a_wrong_password_not_an_outage(
    issuer: OidcIssuer, claims: dict[str, Any], why: str
) -> None:
    now = int(time.time())
    body = {**JOB, "iss": issuer.url, "iat": now, "exp": now + 300, **claims}
    body = {name: value for name, value in body.items() if value is not None}
    token = jwt.encode(body, issuer.keys["k1"], "RS256", headers={"kid": "k1"})
    assert (await login(backend(issuer), token)).outcome is Outcome.REJECTED, why


async def test_only_the_configured_algorithms_verify(issuer: OidcIssuer) -> None:
    """RS384 with a key published without `alg` (so fit for it) while only RS256 is
    configured: refused."""
    published = [{k: v for k, v in jwk.items() if k != "alg"} for jwk in issuer.jwks()["keys"]]
    issuer.answers["/keys"] = (200, json.dumps({"keys": published}).encode(), {})
    rs384 = issuer.token(algorithm="RS384", **JOB)
    assert (await login(backend(issuer, algorithms=["RS384"]), rs384)).outcome is Outcome.ACCEPTED
    assert (await login(backend(issuer), rs384)).outcome is Outcome.REJECTED


async def test_a_token_without_kid_is_verified_only_against_a_lone_key(
    issuer: OidcIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    now = int(time.time())
    body = {**JOB, "iss": issuer.url, "iat": now, "exp": now + 300}
    no_kid = jwt.encode(body, issuer.keys["k1"], "RS256")
    assert (await login(backend(issuer), no_kid)).outcome is Outcome.ACCEPTED
    issuer.add_key("k2")
    clock = FakeClock()
    auth = backend(issuer, clock)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED  # keys in hand
    clock.now += UNKNOWN_KID_REFETCH
    assert (await login(auth, no_kid)).outcome is Outcome.REJECTED  # which of the two?
    assert "it names no key (kid), and the issuer has several" in caplog.text
    first = backend(issuer)  # the same, as the first login of a worker (after its fetch)
    assert (await login(first, no_kid)).outcome is Outcome.REJECTED


async def test_a_token_naming_a_key_is_verified_against_a_lone_key_published_without_id(
    issuer: OidcIssuer,
) -> None:
    """An issuer that publishes its one key without `kid` but names it in its tokens: every
    login was a 503 (unknown key id), the keys fetched again every 30 s, for ever."""
    published = [{k: v for k, v in jwk.items() if k != "kid"} for jwk in issuer.jwks()["keys"]]
    issuer.answers["/keys"] = (200, json.dumps({"keys": published}).encode(), {})
    clock = FakeClock()
    auth = backend(issuer, clock)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = issuer.token(key=forger, **JOB)
    assert (await login(auth, forged)).outcome is Outcome.REJECTED
    # The issuer rotates, still publishing one key without an id: a token naming the new one
    # is not checked against the key in hand (refused and counted), it fetches the keys anew.
    issuer.keys.clear()
    issuer.add_key("k2")
    published = [{k: v for k, v in jwk.items() if k != "kid"} for jwk in issuer.jwks()["keys"]]
    issuer.answers["/keys"] = (200, json.dumps({"keys": published}).encode(), {})
    clock.now += UNKNOWN_KID_REFETCH
    assert (await login(auth, issuer.token(kid="k2", **JOB))).outcome is Outcome.ACCEPTED
