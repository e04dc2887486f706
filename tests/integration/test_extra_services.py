"""One token service for two real registries (docker-registry 2.8) with different `service`
names (`extra_services`): skopeo pushes to each, and a token for one is refused by the other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.support.oci import OciImage
from tests.integration.support.registry import TokenAuth, start_registry
from tests.integration.support.skopeo import Creds, Skopeo
from tests.integration.support.stack import USERS, Stack

STAGING = "staging.test"


def test_two_registries_each_take_only_tokens_for_their_own_service(
    stack_factory: Callable[..., Stack],
    skopeo: Skopeo,
    make_image: Callable[..., OciImage],
    tmp_path: Path,
) -> None:
    stack = stack_factory(extra_settings={"extra_services": [STAGING]})
    auth = stack.auth
    staging = start_registry(
        tmp_path / "staging", TokenAuth(auth.realm, STAGING, auth.issuer, auth.bundle)
    )
    try:
        alice = Creds("alice", USERS["alice"])
        image = make_image("1.0")
        for registry in (stack.registry, staging):
            pushed = skopeo.copy(image.ref, registry.ref("team/app", "1.0"), dest_creds=alice)
            assert pushed.ok, f"{pushed}\n{stack.logs()}"
        # A token for the main registry (aud registry.test) is no good on staging.
        main_token = auth.token(["repository:team/app:pull"], auth=("alice", USERS["alice"]))
        bearer = {"Authorization": f"Bearer {main_token.json()['token']}"}
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            tags = "/v2/team/app/tags/list"
            assert client.get(stack.registry.url + tags, headers=bearer).status_code == 200
            assert client.get(staging.url + tags, headers=bearer).status_code == 401
    finally:
        staging.stop()
