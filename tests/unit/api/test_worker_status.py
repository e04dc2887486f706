"""Each worker's readiness, shared through the workers' directory: written when it changes,
read for the workers still running, and merged into the /readyz answer of any of them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from app.api import worker_status
from app.api.app import readiness
from app.api.metrics_http import MULTIPROC_ENV
from app.api.worker_status import WorkerReadiness
from app.service import TokenService
from app.settings import load_settings

ME = os.getpid()


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(worker_status, "_written", {})
    monkeypatch.setattr(worker_status, "_several", True)  # as run_granian sets it
    return tmp_path


@pytest.fixture
def running_pid() -> Iterator[int]:
    """The PID of a process that runs for the test: another worker."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def record(
    pid: int, *, ready: bool = True, kid: str = "KID1", warnings: tuple[str, ...] = ()
) -> WorkerReadiness:
    return WorkerReadiness(pid, ready, kid, warnings)


def test_one_process_with_the_metrics_directory_shares_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`workers: 1` has the metrics' multiprocess directory too: its /readyz said `workers: 1`
    and it wrote a record nobody reads."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(worker_status, "_several", False)
    worker_status.publish(record(ME))
    assert not worker_status.shared()
    assert list(tmp_path.iterdir()) == []


def test_one_process_shares_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    worker_status.publish(record(ME))
    assert not worker_status.shared()
    assert worker_status.others(ME + 1) == []
    assert list(tmp_path.iterdir()) == []


def test_a_record_is_written_only_when_it_changes(shared: Path) -> None:
    worker_status.publish(record(ME))
    path = shared / f"readyz-{ME}.json"
    first = path.stat().st_ino
    worker_status.publish(record(ME))
    assert path.stat().st_ino == first  # the same: not written again
    worker_status.publish(record(ME, warnings=("w",)))
    assert path.stat().st_ino != first  # replaced whole (written atomically)
    assert orjson.loads(path.read_bytes()) == {
        "ready": True,
        "active_kid": "KID1",
        "warnings": ["w"],
    }
    path.unlink()  # someone removed it: written again, though unchanged
    worker_status.publish(record(ME, warnings=("w",)))
    assert path.exists()


def test_others_are_the_running_workers_and_the_records_of_gone_ones_are_removed(
    shared: Path, running_pid: int, gone_pid: int
) -> None:
    for pid in (ME, running_pid, gone_pid):
        worker_status.publish(record(pid, kid=f"kid-{pid}"))
    (shared / "readyz-123x.json").write_text("{}")  # not one of these records
    assert worker_status.others(ME) == [record(running_pid, kid=f"kid-{running_pid}")]
    assert not (shared / f"readyz-{gone_pid}.json").exists()
    assert (shared / f"readyz-{ME}.json").exists()
    (shared / f"readyz-{running_pid}.json").write_text("not json")
    assert worker_status.others(ME) == []  # unreadable: left out, not removed
    assert (shared / f"readyz-{running_pid}.json").exists()


@pytest.fixture
def service(rsa_keys_dir: Path, tmp_path: Path) -> TokenService:
    htpasswd = tmp_path / "users.htpasswd"
    htpasswd.write_text("")
    settings = load_settings(
        overrides={"keys_dir": str(rsa_keys_dir), "htpasswd": str(htpasswd), "issuer": "i",
                   "service": "registry.test", "realm": "https://auth.test/token"}
    )  # fmt: skip
    return TokenService.from_settings(settings)


def answer(service: TokenService) -> tuple[int, dict[str, object]]:
    response = readiness(service, {"enabled": False})
    return response.status_code, orjson.loads(response.body)


def test_readyz_adds_the_other_workers(
    shared: Path, service: TokenService, running_pid: int
) -> None:
    kid = service.keyring.active.kid
    status, body = answer(service)
    assert (status, body["workers"], "warnings" in body) == (200, 1, False)
    assert orjson.loads((shared / f"readyz-{ME}.json").read_bytes())["active_kid"] == kid

    worker_status.publish(record(running_pid, kid=kid, warnings=("its reload failed",)))
    status, body = answer(service)
    assert (status, body["workers"], body["warnings"]) == (200, 2, ["its reload failed"])

    worker_status.publish(record(running_pid, kid="OLDKID"))
    status, body = answer(service)
    kids = ", ".join(sorted((kid, "OLDKID")))
    assert (status, body["active_kid"]) == (200, kid)
    assert body["warnings"] == [
        f"the workers do not sign with the same key ({kids}): one has not loaded the key ring "
        "yet, or could not (see the log)"
    ]

    worker_status.publish(record(running_pid, ready=False, kid=kid))  # it cannot sign
    status, body = answer(service)
    assert (status, body["status"]) == (503, "unavailable")
