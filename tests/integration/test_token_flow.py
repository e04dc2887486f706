"""End to end: the real skopeo talks to the real docker-registry 2.8, which sends it to us.

Every stack is our service (`python -m app serve`) plus a registry whose `auth: token:` points
at its realm and whose rootcertbundle is the bundle.pem our `keys generate` wrote.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest

from app.keys.signing import sign_token
from app.keys.store import load_keyring
from app.protocol.tokens import build_claims
from tests.integration.support.authserver import generate_key
from tests.integration.support.oci import OciImage, manifest_digest, read_layer_file
from tests.integration.support.skopeo import Creds, Skopeo, SkopeoResult
from tests.integration.support.stack import ALICE, Stack, StackPool

ALGORITHMS = ["RS256", "ES256"]
# How skopeo 1.9 words a 401 from the registry, depending on the call that got it.
DENIED_WORDS = (
    "unauthorized",
    "authentication required",
    "requested access to the resource is denied",
)
MakeImage = Callable[..., OciImage]


def challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer k="v",...` header."""
    header = response.headers.get("www-authenticate", "")
    assert header.startswith("Bearer "), f"no Bearer challenge: {response.status_code} {header!r}"
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def bearer_get(url: str, token: str) -> httpx.Response:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        return client.get(url, headers={"Authorization": f"Bearer {token}"})


def token_for(stack: Stack, scopes: tuple[str, ...] = (), creds: Creds | None = ALICE) -> str:
    auth = (creds.username, creds.password) if creds is not None else None
    response = stack.auth.token(scopes, auth=auth)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def push(skopeo: Skopeo, stack: Stack, image: OciImage, repository: str) -> None:
    result = skopeo.copy(image.ref, stack.registry.ref(repository, image.tag), dest_creds=ALICE)
    assert result.ok, result


def assert_denied(result: SkopeoResult) -> None:
    """skopeo failed because the registry refused it (401/denied), not for another reason."""
    assert not result.ok, f"expected a refusal, skopeo succeeded:\n{result}"
    stderr = result.stderr.lower()
    assert any(word in stderr for word in DENIED_WORDS), result


# --- the registry sends clients to us ------------------------------------------------------


def test_registry_challenge_names_our_realm_and_service(stack: Stack) -> None:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        base = client.get(f"{stack.registry.url}/v2/")
        tags = client.get(f"{stack.registry.url}/v2/team/app/tags/list")

    assert base.status_code == 401
    assert challenge(base) == {"realm": stack.auth.realm, "service": stack.auth.service}
    assert tags.status_code == 401
    assert challenge(tags)["realm"] == stack.auth.realm
    assert challenge(tags)["scope"] == "repository:team/app:pull"


@pytest.mark.parametrize("x5c", [True, False], ids=["x5c", "kid-only"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_token_from_the_service_opens_v2(stack_pool: StackPool, algorithm: str, x5c: bool) -> None:
    """`docker login` in short: Basic creds at the realm, then GET /v2/ with the Bearer token.

    kid-only: registry 2.8 finds the key by its libtrust fingerprint in the bundle.
    """
    stack = stack_pool.get(algorithm, x5c=x5c)
    token = token_for(stack)

    response = bearer_get(f"{stack.registry.url}/v2/", token)

    assert response.status_code == 200, f"{response.status_code} {response.text}"
    header = jwt.get_unverified_header(token)
    assert header["alg"] == algorithm
    assert header["kid"] == stack.auth.kid
    assert ("x5c" in header) is x5c


@pytest.mark.parametrize(("ahead", "status"), [(100, 200), (130, 401)])
def test_a_registry_whose_clock_is_behind_ours_still_takes_a_fresh_token(
    stack: Stack, ahead: int, status: int
) -> None:
    """Claims as the service builds them, on a clock `ahead` seconds in front of the
    registry's: `nbf` a minute before `iat`, plus the registry's own 60 s of leeway, is two
    minutes of skew taken (with `nbf` = `iat` every fresh token was 401 past one minute)."""
    claims = build_claims(
        issuer=stack.auth.issuer,
        subject=ALICE.username,
        audience=stack.auth.service,
        access=(),
        issued_at=int(time.time()) + ahead,
        ttl=300,
        jti="skew-test",
    )
    token = sign_token(load_keyring(stack.auth.keys_dir).active, claims)

    response = bearer_get(f"{stack.registry.url}/v2/", token)

    assert response.status_code == status, f"{response.status_code} {response.text}"


# --- a user pushes and pulls ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_user_pushes_an_image_and_pulls_it_back(
    stack_pool: StackPool, algorithm: str, skopeo: Skopeo, make_image: MakeImage, tmp_path: Path
) -> None:
    stack = stack_pool.get(algorithm)
    image = make_image("1.0")
    repository = f"team/push-pull-{algorithm.lower()}"
    push(skopeo, stack, image, repository)

    pulled = tmp_path / "pulled"
    result = skopeo.copy(
        stack.registry.ref(repository, "1.0"), f"oci:{pulled}:1.0", src_creds=ALICE
    )

    assert result.ok, result
    assert manifest_digest(pulled, "1.0") == image.manifest_digest
    assert read_layer_file(pulled, "1.0") == image.content
    tags = skopeo.list_tags(f"docker://{stack.registry.host}/{repository}", ALICE)
    assert tags.ok, tags
    assert tags.json() == {"Repository": f"{stack.registry.host}/{repository}", "Tags": ["1.0"]}


# --- what the default policy refuses -------------------------------------------------------


def test_anonymous_pull_of_a_private_repository_fails(
    stack: Stack, skopeo: Skopeo, make_image: MakeImage, tmp_path: Path
) -> None:
    image = make_image("1.0")
    push(skopeo, stack, image, "team/private")
    ref = stack.registry.ref("team/private", "1.0")

    anonymous = skopeo.copy(ref, f"oci:{tmp_path / 'anon'}:1.0", src_creds=None)
    as_alice = skopeo.inspect(ref, ALICE)  # the same image is there: the refusal is auth

    assert_denied(anonymous)
    assert not (tmp_path / "anon" / "index.json").exists()
    assert as_alice.ok, as_alice
    assert as_alice.json()["Digest"] == image.manifest_digest  # type: ignore[index]


def test_anonymous_push_fails(stack: Stack, skopeo: Skopeo, make_image: MakeImage) -> None:
    image = make_image("1.0")

    result = skopeo.copy(image.ref, stack.registry.ref("team/anon-push", "1.0"), dest_creds=None)

    assert_denied(result)
    tags = skopeo.list_tags(f"docker://{stack.registry.host}/team/anon-push", ALICE)
    assert not tags.ok, f"the anonymous push landed:\n{tags}"
    assert "name unknown" in tags.stderr.lower() or "not found" in tags.stderr.lower(), tags


@pytest.mark.parametrize(
    "creds",
    [Creds("alice", "not-alice-password"), Creds("mallory", "alice-Secret-1")],
    ids=["wrong-password", "unknown-user"],
)
def test_bad_credentials_fail(
    stack: Stack, skopeo: Skopeo, make_image: MakeImage, creds: Creds
) -> None:
    image = make_image("1.0")

    result = skopeo.copy(image.ref, stack.registry.ref("team/bad-creds", "1.0"), dest_creds=creds)
    direct = stack.auth.token(
        ["repository:team/bad-creds:pull,push"], auth=(creds.username, creds.password)
    )

    assert_denied(result)
    assert direct.status_code == 401
    assert direct.json()["details"]
    assert direct.headers["www-authenticate"].startswith("Basic realm=")


def test_anonymous_token_gets_insufficient_scope_from_the_registry(stack: Stack) -> None:
    """A denied scope is a valid token with no actions; the registry then refuses the call."""
    response = stack.auth.token(["repository:team/app:pull"])
    assert response.status_code == 200, response.text
    assert jwt.decode(response.json()["token"], options={"verify_signature": False})["access"] == [
        {"type": "repository", "name": "team/app", "actions": []}
    ]

    refused = bearer_get(f"{stack.registry.url}/v2/team/app/tags/list", response.json()["token"])

    assert refused.status_code == 401
    assert challenge(refused)["error"] == "insufficient_scope"


def test_delete_is_refused_by_the_default_policy(
    stack: Stack, skopeo: Skopeo, make_image: MakeImage
) -> None:
    image = make_image("1.0")
    push(skopeo, stack, image, "team/keep")
    ref = stack.registry.ref("team/keep", "1.0")

    result = skopeo.delete(ref, ALICE)

    assert_denied(result)
    still_there = skopeo.inspect(ref, ALICE)
    assert still_there.ok, still_there


# --- the registry really checks the signature ----------------------------------------------


def test_registry_trusting_another_bundle_rejects_our_tokens(
    stack_factory: Callable[..., Stack], skopeo: Skopeo, make_image: MakeImage, tmp_path: Path
) -> None:
    """Restart the registry with a foreign bundle: our token is refused; with ours back, fine.

    Also proves Registry.restart keeps the storage (what key-rotation tests rely on).
    """
    stack = stack_factory()
    image = make_image()
    push(skopeo, stack, image, "team/restarted")
    token = token_for(stack)
    v2 = f"{stack.registry.url}/v2/"
    other_keys = tmp_path / "other-keys"
    generate_key(other_keys, "RS256")

    stack.registry.restart(rootcertbundle=other_keys / "bundle.pem")
    refused = bearer_get(v2, token)
    stack.registry.restart(rootcertbundle=stack.auth.bundle)
    accepted = bearer_get(v2, token)
    found = skopeo.inspect(stack.registry.ref("team/restarted", image.tag), ALICE)

    assert refused.status_code == 401, refused.text
    assert challenge(refused)["error"] == "invalid_token"
    assert accepted.status_code == 200, accepted.text
    assert found.ok, found
    assert found.json()["Digest"] == image.manifest_digest  # type: ignore[index]
