"""The ACL with the real registry and skopeo: what users can and cannot do, and hot reload.

One stack (our service with `acl:` + docker-registry 2.8) is shared by the module; the reload
tests start private stacks because they edit the policy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from tests.integration.support.authserver import app_command, generate_key
from tests.integration.support.oci import OciImage
from tests.integration.support.procs import free_port
from tests.integration.support.skopeo import Creds, Skopeo, SkopeoResult
from tests.integration.support.stack import Stack, start_stack

USERS = {
    "alice": "alice-Secret-1",
    "bob": "bob-Secret-2",
    "jenkins": "jenkins-Secret-3",
    "admin": "admin-Secret-4",
}
ALICE, BOB, JENKINS, ADMIN = (Creds(name, password) for name, password in USERS.items())
DENIED_WORDS = ("unauthorized", "authentication required", "requested access to the resource")

POLICY = {
    "groups": {"ci": ["jenkins"]},
    "rules": [
        {"match": {"account": "admin"}, "allow": ["*"]},
        {"match": {"account": "*", "name": "${account}/*"}, "allow": ["pull", "push"]},
        {"match": {"account": "*", "name": "${account}/scratch"}, "allow": ["delete"]},
        {"match": {"group": "ci", "name": "team/**"}, "allow": ["pull"]},
        {"match": {"anonymous": True, "name": "public/**"}, "allow": ["pull"]},
    ],
}
MakeImage = Callable[..., OciImage]


def start_acl_stack(workdir: Path, policy: dict[str, object], reload_interval: float) -> Stack:
    workdir.mkdir(parents=True, exist_ok=True)
    acl = workdir / "acl.yaml"
    acl.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    extra = {"acl": str(acl), "reload_interval": reload_interval}
    return start_stack(workdir, users=USERS, extra_settings=extra)


@pytest.fixture(scope="module")
def acl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_acl_stack(tmp_path_factory.mktemp("acl-stack"), POLICY, 2.0)
    yield stack
    stack.stop()


def push(
    skopeo: Skopeo, stack: Stack, image: OciImage, repo: str, creds: Creds | None
) -> SkopeoResult:
    return skopeo.copy(image.ref, stack.registry.ref(repo, image.tag), dest_creds=creds)


def assert_ok(result: SkopeoResult) -> None:
    assert result.ok, result


def assert_denied(result: SkopeoResult) -> None:
    assert not result.ok, f"expected a refusal, skopeo succeeded:\n{result}"
    assert any(word in result.stderr.lower() for word in DENIED_WORDS), result


def token(stack: Stack, scopes: list[str], creds: Creds | None) -> str:
    auth = (creds.username, creds.password) if creds is not None else None
    response = stack.auth.token(scopes, auth=auth)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def test_user_pushes_into_own_namespace_only(
    acl_stack: Stack, skopeo: Skopeo, make_image: MakeImage
) -> None:
    image = make_image("1.0")
    assert_ok(push(skopeo, acl_stack, image, "alice/app", ALICE))
    assert_denied(push(skopeo, acl_stack, image, "bob/app", ALICE))
    assert_ok(skopeo.inspect(acl_stack.registry.ref("alice/app", "1.0"), ALICE))
    # bob cannot read alice's namespace either, but can push into his own.
    assert_denied(skopeo.inspect(acl_stack.registry.ref("alice/app", "1.0"), BOB))
    assert_ok(push(skopeo, acl_stack, make_image("1.0"), "bob/app", BOB))


def test_ci_group_pulls_but_cannot_push(
    acl_stack: Stack, skopeo: Skopeo, make_image: MakeImage
) -> None:
    image = make_image("2.0")
    assert_ok(push(skopeo, acl_stack, image, "team/backend/api", ADMIN))
    assert_ok(skopeo.inspect(acl_stack.registry.ref("team/backend/api", "2.0"), JENKINS))
    assert_denied(push(skopeo, acl_stack, make_image("2.1"), "team/backend/api", JENKINS))
    # alice is not in ci: team/** is closed to her.
    assert_denied(skopeo.inspect(acl_stack.registry.ref("team/backend/api", "2.0"), ALICE))


def test_anonymous_pulls_public_only(
    acl_stack: Stack, skopeo: Skopeo, make_image: MakeImage
) -> None:
    assert_ok(push(skopeo, acl_stack, make_image("3.0"), "public/base", ADMIN))
    assert_ok(push(skopeo, acl_stack, make_image("3.0"), "team/private", ADMIN))
    assert_ok(skopeo.inspect(acl_stack.registry.ref("public/base", "3.0")))
    assert_denied(skopeo.inspect(acl_stack.registry.ref("team/private", "3.0")))
    assert_denied(push(skopeo, acl_stack, make_image("3.1"), "public/base", None))


def test_delete_only_where_allowed(acl_stack: Stack, skopeo: Skopeo, make_image: MakeImage) -> None:
    # Distinct images: skopeo deletes by digest, which removes every tag of that image.
    keep = acl_stack.registry.ref("alice/app", "keep")
    scratch = acl_stack.registry.ref("alice/scratch", "tmp")
    assert_ok(skopeo.copy(make_image("keep").ref, keep, dest_creds=ALICE))
    assert_ok(skopeo.copy(make_image("tmp").ref, scratch, dest_creds=ALICE))

    assert_denied(skopeo.delete(keep, ALICE))
    assert_ok(skopeo.inspect(keep, ALICE))

    assert_ok(skopeo.delete(scratch, ALICE))
    gone = skopeo.inspect(scratch, ALICE)
    assert not gone.ok
    assert "manifest unknown" in gone.stderr.lower(), gone


def test_catalog_only_for_admin(acl_stack: Stack, skopeo: Skopeo, make_image: MakeImage) -> None:
    assert_ok(push(skopeo, acl_stack, make_image("4.0"), "alice/listed", ALICE))
    url = f"{acl_stack.registry.url}/v2/_catalog"
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        for creds, status in ((ADMIN, 200), (ALICE, 401), (None, 401)):
            bearer = token(acl_stack, ["registry:catalog:*"], creds)
            response = client.get(url, headers={"Authorization": f"Bearer {bearer}"})
            assert response.status_code == status, (creds, response.text)
            if status == 200:
                assert "alice/listed" in response.json()["repositories"]
            else:
                assert "insufficient_scope" in response.headers["www-authenticate"]


# --- hot reload -------------------------------------------------------------------------------

CLOSED = {"rules": [{"match": {"account": "admin"}, "allow": ["*"]}]}
OPEN = {
    "rules": [
        *CLOSED["rules"],
        {"match": {"anonymous": True, "name": "public/**"}, "allow": ["pull"]},
    ]
}


def write_policy(stack: Stack, policy: dict[str, object] | str) -> None:
    """Replace the file as an editor or a config-management tool does (write, rename)."""
    acl = Path(stack.auth.settings["acl"])
    text = policy if isinstance(policy, str) else yaml.safe_dump(policy, sort_keys=False)
    tmp = acl.with_suffix(".new")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(acl)


def anonymous_pull_granted(stack: Stack) -> bool:
    response = stack.auth.token(["repository:public/base:pull"])
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    return bool(claims["access"][0]["actions"])


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_edited_acl_changes_the_next_pull_without_restart(
    tmp_path: Path, skopeo: Skopeo, make_image: MakeImage
) -> None:
    stack = start_acl_stack(tmp_path / "stack", CLOSED, 0.3)
    try:
        pid = stack.auth.process.pid
        ref = stack.registry.ref("public/base", "1.0")
        assert_ok(skopeo.copy(make_image("1.0").ref, ref, dest_creds=ADMIN))
        assert_denied(skopeo.inspect(ref))

        write_policy(stack, OPEN)
        assert wait_until(lambda: anonymous_pull_granted(stack), 10.0), stack.logs()
        assert_ok(skopeo.inspect(ref))

        # A broken edit is refused and logged; the policy in force stays.
        write_policy(stack, "rules:\n  - match: {name: 'public/**'}\n    allow: [pul]\n")
        assert wait_until(lambda: "reload of ACL" in stack.auth.log(), 10.0), stack.logs()
        assert "rules[0].allow: unknown action 'pul'" in stack.auth.log()
        assert_ok(skopeo.inspect(ref))

        write_policy(stack, CLOSED)
        assert wait_until(lambda: not anonymous_pull_granted(stack), 10.0), stack.logs()
        assert_denied(skopeo.inspect(ref))
        assert stack.auth.process.running
        assert stack.auth.process.pid == pid
    finally:
        stack.stop()


def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    # Polling once an hour: only the signal can explain the change.
    stack = start_acl_stack(tmp_path / "stack", CLOSED, 3600.0)
    try:
        write_policy(stack, OPEN)
        assert not anonymous_pull_granted(stack)
        os.kill(stack.auth.process.pid, signal.SIGHUP)
        assert wait_until(lambda: anonymous_pull_granted(stack), 10.0), stack.logs()
        assert stack.auth.process.running
    finally:
        stack.stop()


def test_invalid_acl_refuses_to_start(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    generate_key(keys_dir)
    (tmp_path / "acl.yaml").write_text(
        "rules:\n  - match: {ip: 10.0.0.1/8}\n    allow: [pull]\n", encoding="utf-8"
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f"issuer: i\nservice: s\nrealm: http://127.0.0.1:9/token\nlisten: 127.0.0.1:{free_port()}\n"
        f"keys_dir: {keys_dir}\nacl: acl.yaml\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        app_command("serve", "--config", str(config)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert (
        f"registry-auth: error: {tmp_path / 'acl.yaml'}: rules[0].match.ip: '10.0.0.1/8' is not "
        "an address, CIDR or range: 10.0.0.1/8 has host bits set\n"
    ) in result.stderr
