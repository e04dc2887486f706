"""Load and faults: steady mixed traffic while, one after another, the users file and the ACL are
edited, the key ring is rotated (add + promote), etcd is killed and restarted, and the second of
two service processes is restarted. The live process must answer every request, never with a
5xx, and every token must verify against the published bundle.

Short in the normal run; a soak runs the same test for longer (loopback only):

    SOAK_SECONDS=600 .venv/bin/pytest tests/integration/test_load_and_fault.py -s
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography import x509

from tests.integration.support.authserver import add_user, app_command, generate_key
from tests.integration.support.etcd import EtcdServer, start_etcd
from tests.integration.support.procs import (
    ManagedProcess,
    free_port,
    run_checked,
    start_process,
    wait_for_http,
)

DURATION = float(os.environ.get("SOAK_SECONDS", "12"))
WORKERS = 3
SERVICE, ISSUER = "registry.load", "registry-auth load"
ALICE = ("alice", "alice-Load-1")
ACL = {
    "rules": [
        {"match": {"anonymous": True, "name": "public/**"}, "allow": ["pull"]},
        {"match": {"account": "*", "name": "team/**"}, "allow": ["pull", "push"]},
    ]
}


@dataclass
class Instance:
    name: str
    port: int
    config: Path
    workdir: Path
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_process(
            self.name,
            app_command("serve", "--config", str(self.config)),
            self.workdir / "logs",
            drop_env_prefixes=("REGISTRY_AUTH_",),
        )
        wait_for_http(self.process, f"{self.url}/healthz", ready=lambda r: r.status_code == 200)

    def stop(self) -> int | None:
        return self.process.stop(timeout=20) if self.process is not None else None


@dataclass
class Tally:
    """Every request sent to one instance and what came back."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, call: Callable[[], httpx.Response]) -> bool:
        with self.lock:
            self.sent += 1
        try:
            response = call()
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            return False
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 200:
                self.tokens.append(response.json()["access_token"])
                return True
            self.errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
            return False

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())


def _write_config(path: Path, workdir: Path, port: int, realm_port: int, etcd: EtcdServer) -> None:
    settings = {
        "issuer": ISSUER,
        "service": SERVICE,
        "realm": f"http://127.0.0.1:{realm_port}/token",
        "listen": f"127.0.0.1:{port}",
        "keys_dir": str(workdir / "keys"),
        "htpasswd": str(workdir / "users.htpasswd"),
        "acl": str(workdir / "acl.yaml"),
        "reload_interval": 0.5,
        "state": {"path": str(workdir / "state.db")},
        "audit_log": str(workdir / f"audit-{port}.jsonl"),
        "etcd": {"endpoints": [etcd.url], "interval": 1.0, "retry_max": 1.0, "timeout": 1.0},
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")


def _replace(path: Path, text: str) -> None:
    """Atomic, as an operator's tools (or a ConfigMap) write."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text, encoding="utf-8")
    scratch.replace(path)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Instance, Instance, EtcdServer]]:
    etcd = start_etcd(tmp_path / "etcd")
    generate_key(tmp_path / "keys")
    add_user(tmp_path / "users.htpasswd", *ALICE)
    _replace(tmp_path / "acl.yaml", yaml.safe_dump(ACL))
    ports = (free_port(), free_port())
    instances = []
    for name, port in zip(("live", "restarted"), ports, strict=True):
        config = tmp_path / f"{name}.yaml"
        _write_config(config, tmp_path, port, ports[0], etcd)
        instances.append(Instance(name, port, config, tmp_path))
    for instance in instances:
        instance.start()
    yield instances[0], instances[1], etcd
    for instance in instances:
        instance.stop()
    etcd.stop()


def _traffic(url: str, refresh_token: str, tally: Tally, stop: threading.Event, seed: int) -> None:
    """Anonymous, password and refresh requests in turn, until `stop`."""
    with httpx.Client(base_url=url, timeout=15.0, trust_env=False) as client:
        turn = seed
        while not stop.is_set():
            kind = ("anonymous", "password", "refresh")[turn % 3]
            turn += 1
            if kind == "anonymous":
                params = {"service": SERVICE, "scope": "repository:public/app:pull"}
                ok = tally.record(kind, lambda p=params: client.get("/token", params=p))
            elif kind == "password":
                params = {"service": SERVICE, "scope": "repository:team/app:pull,push"}
                ok = tally.record(kind, lambda p=params: client.get("/token", params=p, auth=ALICE))
            else:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "service": SERVICE,
                    "client_id": "docker",
                    "scope": "repository:team/app:pull",
                }
                ok = tally.record(kind, lambda f=form: client.post("/token", data=f))
            if not ok:
                stop.wait(0.05)  # a process that is down: do not spin


def _login_for_refresh_token(url: str) -> str:
    response = httpx.get(
        f"{url}/token",
        params={"service": SERVICE, "client_id": "docker", "offline_token": "true"},
        auth=ALICE,
        timeout=15,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


def _eventually(probe: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def _granted(url: str, scope: str, auth: tuple[str, str] | None) -> list[str]:
    response = httpx.get(
        f"{url}/token", params={"service": SERVICE, "scope": scope}, auth=auth, timeout=15
    )
    if response.status_code != 200:
        return []
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    return list(claims["access"][0]["actions"])


def _faults(live: Instance, other: Instance, etcd: EtcdServer, workdir: Path) -> list[str]:
    """The faults, one after another; returns what was done, in order."""
    done = []
    add_user(workdir / "users.htpasswd", "carol", "carol-Load-1")
    _eventually(
        lambda: _granted(live.url, "repository:team/x:pull", ("carol", "carol-Load-1")) == ["pull"],
        "the new user logs in",
    )
    done.append("htpasswd edited (carol added)")
    yield_to_load()
    rules = [*ACL["rules"], {"match": {"account": "*", "name": "extra/**"}, "allow": ["pull"]}]
    _replace(workdir / "acl.yaml", yaml.safe_dump({"rules": rules}))
    _eventually(
        lambda: _granted(live.url, "repository:extra/x:pull", ALICE) == ["pull"],
        "the ACL edit applies",
    )
    done.append("ACL edited (extra/** added)")
    yield_to_load()
    config = ["--config", str(live.config)]
    added = run_checked(app_command("keys", "add", *config), what="keys add")
    new_kid = added.stdout.strip().splitlines()[-1]
    run_checked(app_command("keys", "promote", new_kid, *config), what="keys promote")
    _eventually(lambda: _signing_kid(live.url) == new_kid, "the promoted key signs")
    done.append(f"key ring rotated (add + promote {new_kid})")
    yield_to_load()
    etcd.kill()
    time.sleep(1.5)
    etcd.start()
    _eventually(
        lambda: httpx.get(f"{live.url}/readyz", timeout=5).json()["etcd"]["published"],
        "publishing to etcd again",
    )
    done.append("etcd killed (SIGKILL) and restarted")
    yield_to_load()
    assert other.stop() == 0
    other.start()
    done.append("second service process restarted (SIGTERM, exit 0, start)")
    return done


def _signing_kid(url: str) -> str:
    response = httpx.get(f"{url}/token", params={"service": SERVICE}, timeout=15)
    return str(jwt.get_unverified_header(response.json()["token"])["kid"])


_PAUSE = threading.Event()


def yield_to_load() -> None:
    """A pause between faults, so each one meets steady traffic."""
    _PAUSE.wait(DURATION / 8)


def _verify_all(tokens: list[str], bundle: Path) -> int:
    keys = [cert.public_key() for cert in x509.load_pem_x509_certificates(bundle.read_bytes())]
    for token in tokens:
        algorithm = jwt.get_unverified_header(token)["alg"]
        errors = []
        for key in keys:
            try:
                jwt.decode(token, key, algorithms=[algorithm], audience=SERVICE, issuer=ISSUER)  # type: ignore[arg-type]
                break
            except jwt.InvalidTokenError as exc:
                errors.append(str(exc))
        else:
            pytest.fail(f"a token verifies against no key of the published bundle: {errors}")
    return len(tokens)


def test_steady_load_through_edits_rotation_etcd_crash_and_a_restart(
    fleet: tuple[Instance, Instance, EtcdServer], tmp_path: Path, capsys: Any
) -> None:
    live, other, etcd = fleet
    refresh_token = _login_for_refresh_token(live.url)
    tallies = {"live": Tally(), "other": Tally()}
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_traffic, args=(live.url, refresh_token, tallies["live"], stop, seed)
        )
        for seed in range(WORKERS)
    ]
    threads.append(
        threading.Thread(
            target=_traffic, args=(other.url, refresh_token, tallies["other"], stop, 1)
        )
    )
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        done = _faults(live, other, etcd, tmp_path)
        time.sleep(max(0.0, started + DURATION - time.monotonic()))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    elapsed = time.monotonic() - started
    served = tallies["live"]
    assert served.errors == [], served.errors[:10]
    assert served.sent == served.answered == served.statuses[200]  # none lost, none failed
    assert served.sent >= 30
    # The restarted process may refuse connections while it is down; whatever it answers is 200.
    assert set(tallies["other"].statuses) == {200}, tallies["other"].errors[:10]
    down_errors = [e for e in tallies["other"].errors if not e.split(": ")[1].endswith("Error")]
    assert down_errors == []
    verified = _verify_all(served.tokens + tallies["other"].tokens, tmp_path / "keys/bundle.pem")
    assert "Traceback" not in live.process.log(10**6) if live.process else True
    with capsys.disabled():
        print(
            f"\nload-and-fault: {served.sent} requests to the live process in {elapsed:.1f} s, "
            f"errors: {len(served.errors)}, 5xx: 0, tokens verified: {verified}; "
            f"restarted process: {tallies['other'].sent} sent, "
            f"{len(tallies['other'].errors)} refused while down; faults: {'; '.join(done)}"
        )
