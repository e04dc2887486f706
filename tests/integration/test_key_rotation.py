"""The README's key rotation runbook, run by our CLI against a fleet of two real docker-registry
2.8 instances while skopeo pushes and pulls in a loop: not one client operation may fail.

The two registries share one storage directory and one http secret, as a fleet behind a load
balancer does. A registry restart is a rolling one: the registry is drained (no new client
operation goes to it, running ones finish), restarted with the new bundle, and put back.
The token service runs once, as a subprocess, and follows the key ring without a restart.
"""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from app.keys.model import SigningKey
from app.keys.ring import promote
from app.keys.signing import sign_token
from app.keys.store import load_keyring, update_ring
from tests.integration.support.authserver import AuthServer, app_command, start_auth_server
from tests.integration.support.oci import build_image, read_layer_file
from tests.integration.support.procs import (
    free_port,
    require_program,
    start_process,
    wait_for_http,
)
from tests.integration.support.registry import (
    Registry,
    TokenAuth,
    start_registry,
    write_registry_config,
)
from tests.integration.support.skopeo import Skopeo, SkopeoResult
from tests.integration.support.stack import ALICE, USERS

TOKEN_TTL = 5  # short, so that retiring waits token_ttl + 60 s and not minutes more
# Bounds on the client loop, whatever happens: it runs until the runbook stops it, but never
# longer than this, nor more operations than this (an idle machine does ~3 operations a second).
MAX_LOOP_SECONDS = 600
MAX_OPERATIONS = 4000
REPOSITORY = "team/rotation"


@dataclass
class Fleet:
    """Registries behind a pretend load balancer that can drain one of them."""

    registries: list[Registry]
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _draining: set[int] = field(default_factory=set)
    _busy: dict[int, int] = field(default_factory=dict)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    @contextmanager
    def pick(self) -> Iterator[Registry]:
        """A registry in service (round robin), held until the client operation ends."""
        with self._cond:
            while True:
                up = [i for i in range(len(self.registries)) if i not in self._draining]
                if up:
                    index = up[next(self._turn) % len(up)]
                    break
                self._cond.wait()
            self._busy[index] = self._busy.get(index, 0) + 1
        try:
            yield self.registries[index]
        finally:
            with self._cond:
                self._busy[index] -= 1
                self._cond.notify_all()

    def rolling_restart(self, bundle: Path) -> None:
        for index, registry in enumerate(self.registries):
            with self._cond:
                self._draining.add(index)
                self._cond.wait_for(lambda i=index: self._busy.get(i, 0) == 0, timeout=120)
            try:
                registry.restart(rootcertbundle=bundle)
            finally:
                with self._cond:
                    self._draining.discard(index)
                    self._cond.notify_all()

    def logs(self) -> str:
        return "\n".join(registry.log() for registry in self.registries)


@dataclass
class ClientLoop:
    """skopeo pushes a distinct image and pulls it back, over and over, in a thread."""

    fleet: Fleet
    skopeo: Skopeo
    workdir: Path
    failures: list[str] = field(default_factory=list)
    done: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="client-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=180)
            assert not self._thread.is_alive(), "the client loop did not stop"

    def wait_for(self, operations: int, timeout: float = 120) -> None:
        """Let at least `operations` more client operations run (during a runbook phase)."""
        target, deadline = self.done + operations, time.monotonic() + timeout
        while self.done < target and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.1)
        assert self.done >= target, f"client loop stalled at {self.done} operations"

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_LOOP_SECONDS
        for number in range(MAX_OPERATIONS // 2):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self._push_and_pull(number)

    def _push_and_pull(self, number: int) -> None:
        image = build_image(self.workdir / f"src{number}", f"v{number}")
        with self.fleet.pick() as registry:
            destination = registry.ref(REPOSITORY, image.tag)
            pushed = self.skopeo.copy(image.ref, destination, dest_creds=ALICE)
            self._count(pushed, "push", registry)
        if not pushed.ok:
            return
        pulled = self.workdir / f"pulled{number}"
        with self.fleet.pick() as registry:  # maybe the other registry: the storage is shared
            source = registry.ref(REPOSITORY, image.tag)
            result = self.skopeo.copy(source, f"oci:{pulled}:{image.tag}", src_creds=ALICE)
            self._count(result, "pull", registry)
        if result.ok and read_layer_file(pulled, image.tag) != image.content:
            self.failures.append(f"pull of {image.tag}: wrong content")

    def _count(self, result: SkopeoResult, what: str, registry: Registry) -> None:
        self.done += 1
        if not result.ok:
            when = time.strftime("%H:%M:%S")
            self.failures.append(f"{when} {what} via {registry.host}: {result}")


def start_peer(workdir: Path, first: Registry) -> Registry:
    """A second registry of the fleet: same storage and http secret as `first`."""
    workdir.mkdir(parents=True)
    (workdir / "storage").symlink_to(first.storage_dir, target_is_directory=True)
    port = free_port()
    config = write_registry_config(
        workdir / "config.yml", port, first.auth, workdir / "storage", first.secret
    )
    binary = require_program("docker-registry", package="docker-registry")
    process = start_process("docker-registry", [binary, "serve", str(config)], workdir / "logs")
    wait_for_http(process, f"http://127.0.0.1:{port}/v2/")
    return Registry(port, first.auth, workdir, process, first.secret)


def cli(auth: AuthServer, *args: str) -> subprocess.CompletedProcess[str]:
    """Our CLI as the operator runs it, with the service's own config file."""
    argv = app_command(*args, "--config", str(auth.config_path))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def bearer_status(registry: Registry, token: str) -> int:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        response = client.get(f"{registry.url}/v2/", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def signed_by(key: SigningKey, auth: AuthServer) -> str:
    """A token with valid claims (not expired) signed by `key`."""
    now = int(time.time())
    claims = {
        "iss": auth.issuer,
        "sub": "alice",
        "aud": auth.service,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
        "access": [],
    }
    return sign_token(key, claims)


def wait_until_signing_with(auth: AuthServer, kid: str, timeout: float = 20) -> None:
    """The running service follows the ring on its own (file poll): no restart, no signal."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        response = auth.token(auth=(ALICE.username, ALICE.password))
        assert response.status_code == 200, response.text
        seen = jwt.get_unverified_header(response.json()["token"])["kid"]
        if seen == kid:
            return
        time.sleep(0.2)
    pytest.fail(f"the service still signs with {seen} {timeout} s after the promotion of {kid}")


def test_rotation_runbook_with_no_failed_pull_or_push(tmp_path: Path) -> None:
    auth = start_auth_server(
        tmp_path / "auth",
        users=USERS,
        token_ttl=TOKEN_TTL,
        extra_settings={"reload_interval": 0.5},
    )
    token_auth = TokenAuth(auth.realm, auth.service, auth.issuer, auth.bundle)
    registries: list[Registry] = []
    try:
        registries.append(start_registry(tmp_path / "registry-a", token_auth))
        registries.append(start_peer(tmp_path / "registry-b", registries[0]))
        fleet = Fleet(registries)
        loop = ClientLoop(fleet, Skopeo(tmp_path / "skopeo"), tmp_path / "images")
        try:
            old_key = _run_runbook(auth, fleet, loop)
        finally:
            loop.stop()
        assert loop.failures == [], "\n".join(loop.failures)
        assert loop.done >= 12

        # The retired key is gone from every registry: a token it signs now is refused,
        # while the same claims signed by the new active key are accepted.
        new_key = load_keyring(auth.keys_dir).active
        for registry in registries:
            assert bearer_status(registry, signed_by(old_key, auth)) == 401
            assert bearer_status(registry, signed_by(new_key, auth)) == 200
        assert "Traceback" not in auth.log()
    finally:
        for registry in registries:
            registry.stop()
        auth.stop()


def _run_runbook(auth: AuthServer, fleet: Fleet, loop: ClientLoop) -> SigningKey:
    """add -> ship bundle (rolling restart) -> promote -> wait -> retire -> ship bundle."""
    loop.start()
    loop.wait_for(2)
    old_key = load_keyring(auth.keys_dir).active  # kept: it signs a token after retirement

    added = cli(auth, "keys", "add", "--algorithm", "ES256")
    assert added.returncode == 0, added.stderr
    new_kid = added.stdout.strip().splitlines()[-1]
    loop.wait_for(2)

    fleet.rolling_restart(auth.bundle)
    loop.wait_for(2)

    promoted = cli(auth, "keys", "promote", new_kid)
    assert promoted.returncode == 0, promoted.stderr
    promoted_at = time.monotonic()
    wait_until_signing_with(auth, new_kid)
    loop.wait_for(2)

    refused = cli(auth, "keys", "retire", old_key.kid)
    assert refused.returncode == 2
    assert "may be valid" in refused.stderr
    assert "--force" in refused.stderr

    # token_ttl + reload_interval (0.5 s) and a second to settle, rounded up + the registry's
    # 60 s leeway, counted from the promotion; no --force needed.
    time.sleep(max(0.0, promoted_at + TOKEN_TTL + 2 + 61 - time.monotonic()))
    retired = cli(auth, "keys", "retire", old_key.kid)
    assert retired.returncode == 0, retired.stderr
    fleet.rolling_restart(auth.bundle)
    loop.wait_for(2)
    return old_key


@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "granian-2-workers"])
def test_a_key_file_the_service_could_not_read_is_loaded_once_chmod_fixes_it(
    tmp_path: Path, workers: int
) -> None:
    """A promote whose new key file the service could not load was never tried again after
    the fix (a `chmod 600`, a `chown`): the service went on signing with the old key, /readyz
    said ready, and `keys retire` of the old key then cut every client off. (`keys promote`
    now refuses a ring it cannot load itself; the CLI run as root still reads a file the
    service cannot, so the promote here is the store's, under a 0640 stand-in.)"""
    auth = start_auth_server(
        tmp_path / "auth", extra_settings={"reload_interval": 0.5, "workers": workers}
    )
    try:
        new = _cli("keys", "add", "--keys-dir", str(auth.keys_dir)).splitlines()[-1]
        new_key_file = key_file(auth.keys_dir, new)
        new_key_file.chmod(0o640)
        update_ring(auth.keys_dir, lambda ring: promote(ring, new, datetime.now(UTC)))
        _until(lambda: "reload of key ring failed" in auth.log(), "the failed reload's log line")
        time.sleep(2)  # 4 polls: add and promote both seen (each may have failed on its own)
        ready = _readyz(auth)
        assert ready["active_kid"] != new
        assert any("reload of the key ring failed" in w for w in ready["warnings"]), ready
        metrics = httpx.get(f"{auth.url}/metrics", timeout=5).text
        assert 'registry_auth_reload_failing{files="key ring"} 1.0' in metrics

        new_key_file.chmod(0o600)  # what the log line says to run
        # Each worker polls on its own: every answer, from whichever worker, agrees at last.
        _until(
            lambda: all(
                (r["active_kid"], "warnings" in r) == (new, False)
                for r in (_readyz(auth) for _ in range(8))
            ),
            "every worker signing with the promoted key, without warnings",
        )
        for _ in range(8):
            token = auth.token().json()["token"]  # anonymous: still signed
            assert jwt.get_unverified_header(token)["kid"] == new
    finally:
        auth.stop()


def _readyz(auth: AuthServer) -> dict[str, Any]:
    return dict(httpx.get(f"{auth.url}/readyz", timeout=5).json())


def key_file(keys_dir: Path, kid: str) -> Path:
    """The private key file keyring.json names for `kid`."""
    ring = json.loads((keys_dir / "keyring.json").read_text())
    (file_id,) = [k["id"] for k in ring["keys"] if k["kid"] == kid]
    return keys_dir / f"{file_id}.key"


def _cli(*args: str) -> str:
    done = subprocess.run(app_command(*args), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _until(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.2)
