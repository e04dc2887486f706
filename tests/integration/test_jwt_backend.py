"""The `jwt` backend against a real HTTP server playing the OpenID Connect issuer (discovery
document, JWKS), and end to end: skopeo pushes to docker-registry 2.8 with a CI job's ID token
as its password."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from app.authn.base import Credentials, Outcome
from app.authn.jwt_tokens import JwtAuthenticator
from app.backend_settings import JwtBackend
from app.errors import BackendUnavailableError
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


def backend(issuer: OidcIssuer, **options: Any) -> JwtAuthenticator:
    settings: dict[str, Any] = {
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
    return JwtAuthenticator(JwtBackend(**settings))


async def login(auth: JwtAuthenticator, password: str) -> Any:
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
    assert result.groups == frozenset({"team", "release"})


async def test_a_password_or_another_issuers_token_is_not_this_backends(
    issuer: OidcIssuer,
) -> None:
    auth = backend(issuer)
    assert (await login(auth, "hunter2")).outcome is Outcome.NOT_MINE
    other = jwt.encode({**JOB, "iss": "https://elsewhere"}, issuer.keys["k1"], "RS256")
    assert (await login(auth, other)).outcome is Outcome.NOT_MINE
    assert issuer.requests == []  # neither made us ask the issuer


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"aud": "another.registry"}, id="another-audience"),
        pytest.param({"namespace_path": "intruders"}, id="claim-of-another-value"),
        pytest.param({"namespace_path": None}, id="claim-missing"),
        pytest.param({"project_path": "robot$ci", "prefix": ""}, id="a-robots-name"),
        pytest.param({"project_path": " team/app"}, id="outer-space"),
        pytest.param({"project_path": 7}, id="account-not-text"),
        pytest.param({"lifetime": -120}, id="expired"),
        pytest.param({"lifetime": 2 * 86400}, id="meant-to-live-too-long"),
    ],
)
async def test_a_token_that_does_not_hold_up_is_a_wrong_password(
    issuer: OidcIssuer, change: dict[str, Any]
) -> None:
    lifetime, prefix = change.pop("lifetime", 300), change.pop("prefix", "ci:")
    claims = {k: v for k, v in {**JOB, **change}.items() if v is not None}
    auth = backend(issuer, account_prefix=prefix)
    result = await login(auth, issuer.token(lifetime=lifetime, **claims))
    assert result.outcome is Outcome.REJECTED


async def test_forged_tokens_are_refused(issuer: OidcIssuer) -> None:
    auth = backend(issuer)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed_elsewhere = issuer.token(key=forger, **JOB)  # kid k1, another key
    assert (await login(auth, signed_elsewhere)).outcome is Outcome.REJECTED
    claims = {**JOB, "iss": issuer.url, "iat": 1, "exp": 4_000_000_000}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert (await login(auth, unsigned)).outcome is Outcome.REJECTED
    # HS256 keyed with the issuer's public key (the algorithm confusion attack).
    public = issuer.jwks()["keys"][0]
    hs = jwt.encode(claims, public["n"].encode(), algorithm="HS256", headers={"kid": "k1"})
    assert (await login(auth, hs)).outcome is Outcome.REJECTED


async def test_unknown_key_ids_fetch_the_keys_again_at_most_every_30_s(
    issuer: OidcIssuer,
) -> None:
    auth = backend(issuer)
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for n in range(20):
        token = issuer.token(f"made-up-{n}", key=stranger, **JOB)
        assert (await login(auth, token)).outcome is Outcome.REJECTED
    assert issuer.requests.count("/keys") <= 2


async def test_the_issuer_down_is_an_outage_and_then_it_works_again(issuer: OidcIssuer) -> None:
    auth = backend(issuer)
    issuer.down = True
    with pytest.raises(BackendUnavailableError):
        await login(auth, issuer.token(**JOB))
    issuer.down = False
    assert (await login(auth, issuer.token(**JOB))).outcome is Outcome.ACCEPTED


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
