"""`serve` with several granian workers, as an operator runs it: tokens from every worker, a
password change refused at once by every worker (each has its own cache), SIGTERM graceful."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.support.authserver import (
    AuthServer,
    add_user,
    app_command,
    launch_auth_server,
    start_auth_server,
)
from tests.integration.support.procs import run_checked

pytestmark = pytest.mark.integration


def _worker_pids(main_pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{main_pid}/task").glob("*/children"):
        found += [int(pid) for pid in task.read_text().split()]
    return found


def test_two_workers_serve_tokens_and_stop_gracefully(tmp_path: Path) -> None:
    # Brute-force protection off: this test sends the old password 20 times on purpose, and
    # must see every worker refuse it with 401, not the throttle's 429.
    extra = {"workers": 2, "brute_force": {"enabled": False}}
    server = start_auth_server(tmp_path, users={"alice": "old-pw"}, extra_settings=extra)
    try:
        assert len(_worker_pids(server.process.pid)) >= 2, server.log()
        # Many connections: both workers see alice's password and cache it.
        answers = [
            server.token(["repository:team/app:pull"], ("alice", "old-pw")) for _ in range(20)
        ]
        assert {r.status_code for r in answers} == {200}
        # Each worker adds its counts up per loop turn and writes them when the turn ends: a
        # scrape (served by either worker) sees all 20 at once, or within a moment.
        expected = {"success": 20.0, "latency_count": 20.0, "accepted": 20.0}
        deadline = time.monotonic() + 5
        while (counts := _token_counts(server)) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert counts == expected
        add_user(server.workdir / "users.htpasswd", "alice", "new-pw")
        deadline = time.monotonic() + 15  # the reload poll (2 s) in each worker
        while time.monotonic() < deadline:
            tries = [server.token([], ("alice", "new-pw")).status_code for _ in range(10)]
            if set(tries) == {200}:  # every worker has reloaded
                break
            time.sleep(0.3)
        refused = [server.token([], ("alice", "old-pw")).status_code for _ in range(20)]
        assert set(refused) == {401}, server.log()
    finally:
        status = server.process.stop(timeout=15)
    assert status == 0, server.log()
    assert "Shutting down granian" in server.log(), server.log()
    # stdout: audit lines only (a collector parses every line); the logs, granian's and the
    # app's, and the registry block printed at start, on stderr.
    out = server.process.stdout_path.read_text().splitlines()
    assert len(out) >= 50
    assert all(json.loads(line)["grant"] == "get" for line in out), out
    err = server.process.stderr_path.read_text()
    assert "# Paste into the registry's config.yml:\nauth:\n" in err
    assert re.search(r"^\d{4}-\d\d-\d\d \S+ INFO _granian: Shutting down granian", err, re.M), err
    assert re.search(r"^\d{4}-\d\d-\d\d \S+ INFO app\.reload: reloaded htpasswd", err, re.M), err


def _token_counts(server: AuthServer) -> dict[str, float]:
    """Token requests answered, their latency observations and accepted password checks, as
    /metrics reports them (every worker's counts together)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    counts = dict.fromkeys(("success", "latency_count", "accepted"), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "registry_auth_requests_total" and labels == {
                "endpoint": "token",
                "outcome": "success",
            }:
                counts["success"] = sample.value
            elif sample.name == "registry_auth_request_duration_seconds_count" and labels == {
                "endpoint": "token"
            }:
                counts["latency_count"] = sample.value
            elif sample.name == "registry_auth_password_checks_total" and labels == {
                "result": "accepted"
            }:
                counts["accepted"] = sample.value
    return counts


def _thread_policies(pid: int) -> set[int]:
    return {os.sched_getscheduler(int(task.name)) for task in Path(f"/proc/{pid}/task").iterdir()}


@pytest.mark.parametrize(
    ("setting", "policy"), [("batch", os.SCHED_BATCH), ("normal", os.SCHED_OTHER)]
)
def test_worker_scheduling_reaches_every_worker_thread(
    tmp_path: Path, setting: str, policy: int
) -> None:
    extra = {"workers": 2, "worker_scheduling": setting}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        # A password check starts the bcrypt threads too: they must follow the policy as well.
        answers = [server.token([], ("alice", "pw")).status_code for _ in range(6)]
        assert set(answers) == {200}
        workers = _worker_pids(server.process.pid)
        assert len(workers) == 2, server.log()
        for pid in workers:
            # The app's thread, granian's I/O threads and the pools' threads.
            assert len(list(Path(f"/proc/{pid}/task").iterdir())) > 1
            assert _thread_policies(pid) == {policy}, server.log()
        # The supervising process is left as it was started.
        assert _thread_policies(server.process.pid) == {os.SCHED_OTHER}
    finally:
        server.process.stop(timeout=15)


def _granted(server: AuthServer, scope: str) -> list[str]:
    answer = server.token([scope], ("alice", "pw"))
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    return [action for entry in claims["access"] for action in entry["actions"]]


def test_sighup_onto_a_broken_file_keeps_the_workers_serving(tmp_path: Path) -> None:
    """A new worker has no last good copy of a broken file and would exit; granian stops the
    old worker all the same, and then the whole service: so a roll waits for the files."""
    acl = tmp_path / "acl.yaml"
    acl.write_text('rules:\n  - match: {account: "*"}\n    allow: [pull]\n', encoding="utf-8")
    extra = {"workers": 2, "acl": str(acl)}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        before = sorted(_worker_pids(server.process.pid))
        acl.write_text("rules:\n  - match: {nonsense: 1}\n", encoding="utf-8")
        os.kill(server.process.pid, signal.SIGHUP)
        time.sleep(9)  # granian would have rolled both workers by now (3.5 s apart)
        assert "SIGHUP ignored: a new worker could not start (" in server.log(), server.log()
        assert server.process.running, server.log()
        assert sorted(_worker_pids(server.process.pid)) == before
        assert _granted(server, "repository:team/app:pull,push") == ["pull"]  # the old policy

        acl.write_text('rules:\n  - match: {account: "*"}\n    allow: [pull, push]\n', "utf-8")
        os.kill(server.process.pid, signal.SIGHUP)  # the files load again: the workers roll
        deadline = time.monotonic() + 20
        while set(_worker_pids(server.process.pid)) & set(before) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not set(_worker_pids(server.process.pid)) & set(before), server.log()
        assert _granted(server, "repository:team/app:pull,push") == ["pull", "push"]
    finally:
        server.process.stop(timeout=15)


def test_a_worker_that_dies_while_a_file_is_broken_is_replaced_once_it_loads(
    tmp_path: Path,
) -> None:
    """The replacement of a crashed worker waits for the broken file instead of exiting: a
    second exit in a row would make granian stop every worker."""
    acl = tmp_path / "acl.yaml"
    acl.write_text('rules:\n  - match: {account: "*"}\n    allow: [pull]\n', encoding="utf-8")
    extra = {"workers": 2, "acl": str(acl), "reload_interval": 0.5}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        acl.write_text("rules:\n  - match: {nonsense: 1}\n", encoding="utf-8")
        victim = _worker_pids(server.process.pid)[0]
        os.kill(victim, signal.SIGKILL)  # the OOM killer, say
        deadline = time.monotonic() + 15
        while "waits for its files to load" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        time.sleep(6)  # past granian's 5.5 s crash-loop window
        assert server.process.running, server.log()
        assert "crash loop" not in server.log()
        assert _granted(server, "repository:team/app:pull,push") == ["pull"]  # the survivor

        acl.write_text('rules:\n  - match: {account: "*"}\n    allow: [pull, push]\n', "utf-8")
        deadline = time.monotonic() + 15
        while server.log().count("Started worker-") < 3:  # two at start, the replacement
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert len(_worker_pids(server.process.pid)) == 2
        wanted = ["pull", "push"]  # from both workers, whichever answers
        while any(_granted(server, "repository:team/app:pull,push") != wanted for _ in range(10)):
            assert time.monotonic() < deadline, server.log()  # the survivor's reload poll
            time.sleep(0.2)
    finally:
        server.process.stop(timeout=15)


def _ttl(server: AuthServer) -> int:
    answer = server.token([], ("alice", "pw"))
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    return int(claims["exp"] - claims["iat"])


def _edit_config(server: AuthServer, **changes: object) -> None:
    server.config_path.write_text(
        yaml.safe_dump({**server.settings, **changes}, sort_keys=False), encoding="utf-8"
    )


def _wait_for_line(server: AuthServer, line: str, seen: int = 0, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count(line) <= seen:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("workers", "applied"),
    [(1, "SIGHUP: reloading every watched file"), (2, "HUP signal received")],
)
def test_a_sighup_while_the_server_starts_is_applied_not_fatal(
    tmp_path: Path, workers: int, applied: str
) -> None:
    """Before the server's own handler was set (about its first second), SIGHUP ended the
    process with status 129, which systemd takes for a clean exit: `Restart=on-failure` left
    it down after a `systemctl reload` right behind a start. SIGUSR1 ended it too."""
    extra = {"workers": workers}
    server = launch_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        # Printed just before the web server's modules load (~1 s): its handlers are not set.
        _wait_for_line(server, "registry-auth: access control:")
        os.kill(server.process.pid, signal.SIGHUP)
        os.kill(server.process.pid, signal.SIGUSR1)
        server.wait_ready()
        _wait_for_line(server, applied)
        assert server.token([], ("alice", "pw")).status_code == 200
    finally:
        assert server.process.stop(timeout=15) == 0, server.log()


def test_sighup_applies_the_config_file_or_says_why_not(tmp_path: Path) -> None:
    """`systemctl reload` after editing the config: the workers restart on it. A config that
    does not load, or that changes what only a restart applies, is refused in one log line
    and the workers go on as they were."""
    extra = {"workers": 2, "token_reuse": False}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        assert _ttl(server) == 300
        before = set(_worker_pids(server.process.pid))

        assert not _config_warning(server)
        _edit_config(server, token_ttl=-5)
        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for_line(server, "SIGHUP ignored: config: token_ttl")
        # Every worker keeps saying it, not only the log line: a restart would fail.
        assert all(_config_warning(server) for _ in range(6))
        _edit_config(server, token_ttl=600, listen="127.0.0.1:1")
        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for_line(server, "SIGHUP ignored: listen changed: only a restart applies it")
        assert set(_worker_pids(server.process.pid)) == before
        assert _ttl(server) == 300

        _edit_config(server, token_ttl=600)
        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for_line(server, "SIGHUP: the config changed (token_ttl): the workers restart")
        deadline = time.monotonic() + 20
        while set(_worker_pids(server.process.pid)) & before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not set(_worker_pids(server.process.pid)) & before, server.log()
        assert {_ttl(server) for _ in range(6)} == {600}  # every new worker
        assert not any(_config_warning(server) for _ in range(6))  # applied: no more warning
    finally:
        server.process.stop(timeout=15)


def _config_warning(server: AuthServer) -> bool:
    """Whether /readyz warns, and /metrics flags, that the config file is not in force (each
    request on a new connection: granian hands them to either worker)."""
    with httpx.Client(timeout=10, trust_env=False) as client:
        ready = client.get(f"{server.url}/readyz").json()
    with httpx.Client(timeout=10, trust_env=False) as client:
        scraped = client.get(f"{server.url}/metrics").text
    warned = any("the config file is not the one in force" in w for w in ready.get("warnings", []))
    flagged = 'registry_auth_reload_failing{files="config"} 1.0' in scraped
    assert warned == flagged, (ready, scraped)
    return warned


def test_one_worker_says_a_changed_config_needs_a_restart(tmp_path: Path) -> None:
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings={"workers": 1})
    try:
        os.kill(server.process.pid, signal.SIGHUP)  # nothing changed: it says what SIGHUP did
        _wait_for_line(server, "SIGHUP: the config is unchanged; users, robots, ACL, keys")
        assert "a backend's secret or CA file read at start applies at the next restart" in (
            server.log()
        )
        assert not _config_warning(server)
        _edit_config(server, token_ttl=600)
        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for_line(server, "SIGHUP: the config changed (token_ttl): with one worker")
        assert "restart to apply it" in server.log()
        assert _ttl(server) == 300  # as the line says: not applied
        assert _config_warning(server)
    finally:
        server.process.stop(timeout=15)


def test_sighups_in_a_row_leave_the_newest_config_in_force(tmp_path: Path) -> None:
    """The config is read on granian's main loop, one reload at a time: a second SIGHUP while
    the first is being checked is not undone by it (in the signal handler, the older one,
    finishing last, won)."""
    extra = {"workers": 2, "token_reuse": False}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        _edit_config(server, token_ttl=600)
        os.kill(server.process.pid, signal.SIGHUP)
        _edit_config(server, token_ttl=900)
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while {_ttl(server) for _ in range(6)} != {900}:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.5)
        time.sleep(8)  # any roll still under way ends
        assert {_ttl(server) for _ in range(6)} == {900}, server.log()
    finally:
        server.process.stop(timeout=15)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_config_that_breaks_the_parser_is_refused_and_reloading_goes_on(
    tmp_path: Path, workers: int
) -> None:
    """A config nested past the parser's recursion limit: one log line, and the server goes
    on reloading its files (with one worker the reload task died; with several, granian's
    supervising loop did, and no worker was replaced again)."""
    extra = {"workers": workers}
    server = start_auth_server(tmp_path, users={"alice": "pw", "bob": "pw"}, extra_settings=extra)
    try:
        server.config_path.write_text(
            "issuer: x\nnested: " + "[" * 3000 + "]" * 3000 + "\n", encoding="utf-8"
        )
        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for_line(server, "nested too deeply")
        htpasswd = tmp_path / "users.htpasswd"
        htpasswd.write_text(
            "".join(line + "\n" for line in htpasswd.read_text().splitlines() if "bob" not in line)
        )
        _edit_config(server)  # the config as it was
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while server.token([], ("bob", "pw")).status_code != 401:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.5)
        assert server.token([], ("alice", "pw")).status_code == 200
    finally:
        server.process.stop(timeout=15)


def test_a_worker_dying_during_a_roll_does_not_take_the_service_down(tmp_path: Path) -> None:
    """The roll replaces the dead worker anyway; granian then took that replacement, started
    moments before, for a crash loop and exited (the whole service gone). Afterwards the main
    process sleeps (it spun on the dead worker's wake-up, a core at 100%, and a SIGTERM could
    hang it: the test's stop then killed it and left both workers running), and SIGTERM stops
    it, workers and all."""
    extra = {"workers": 2, "token_reuse": False}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    workers: list[int] = []
    try:
        found = re.search(r"Spawning worker-2 with PID: (\d+)", server.log())
        assert found is not None, server.log()
        _edit_config(server, token_ttl=600)
        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for_line(server, "Respawning worker-1")
        time.sleep(0.5)
        os.kill(int(found.group(1)), signal.SIGKILL)  # the old worker-2, not yet replaced
        time.sleep(12)  # the roll ends; granian's crash-loop check would have fired
        assert server.process.running, server.log()
        assert "crash loop" not in server.log()
        assert {_ttl(server) for _ in range(6)} == {600}
        busy = _cpu_seconds(server.process.pid)
        time.sleep(2)
        busy = _cpu_seconds(server.process.pid) - busy
        assert busy < 0.2, f"the idle main process used {busy:.2f} s of CPU in 2 s"
        workers = _worker_pids(server.process.pid)
        assert len(workers) == 2, server.log()
        server.process.popen.send_signal(signal.SIGTERM)
        assert server.process.popen.wait(timeout=15) == 0, server.log()
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], server.log()
    finally:
        server.process.stop(timeout=15)
        for pid in workers:  # left running if the main process hung and was killed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_during_a_roll_stops_without_restarting_the_other_workers(
    tmp_path: Path,
) -> None:
    """granian went on with the roll first: every worker started anew, `respawn_interval`
    (3.5 s) and a drain each, before the shutdown's own drain began (past a supervisor's grace
    period with several workers and slow requests). Now the worker being swapped finishes its
    swap, and the rest stop as they are."""
    extra = {"workers": 2, "token_reuse": False}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        _edit_config(server, token_ttl=600)
        os.kill(server.process.pid, signal.SIGHUP)
        _wait_for_line(server, "Respawning worker-1")
        server.process.popen.send_signal(signal.SIGTERM)
        assert server.process.popen.wait(timeout=15) == 0, server.log()
        log = server.log()
        assert "SIGTERM during a roll: the workers not yet restarted stop as they are" in log, log
        assert "Respawning worker-2" not in log, log
        assert "Killing" not in log, log  # each stopped gracefully
    finally:
        server.process.stop(timeout=15)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(server: AuthServer) -> dict[str, Any]:
    """/readyz from a worker that answers: on a new connection each time, which the kernel may
    hand to a stopped worker (then tried again)."""
    for _ in range(20):
        with contextlib.suppress(httpx.TimeoutException):
            answer = httpx.get(f"{server.url}/readyz", timeout=1)
            break
    else:
        raise AssertionError(server.log())
    body: dict[str, Any] = answer.json()
    assert answer.status_code == (200 if body["status"] == "ready" else 503)
    return body


def test_readyz_covers_every_worker_and_says_when_one_signs_with_another_key(
    tmp_path: Path,
) -> None:
    """A probe reaches one worker; its answer covers the others, so a worker that has not
    followed a key rotation is seen before anyone retires the key it still signs with."""
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings={"workers": 2})
    old_kid = _ready(server)["active_kid"]
    stopped = None
    try:
        deadline = time.monotonic() + 15  # each worker writes its record every 2 s
        while _ready(server).get("workers") != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ready(server)["workers"] == 2, server.log()
        stopped = _worker_pids(server.process.pid)[0]
        os.kill(stopped, signal.SIGSTOP)  # it neither answers nor reloads: the other one does
        added = run_checked(
            app_command("keys", "add", "--keys-dir", str(server.keys_dir)), what="keys add"
        )
        new_kid = added.stdout.split()[-1]
        run_checked(
            app_command("keys", "promote", new_kid, "--keys-dir", str(server.keys_dir)),
            what="keys promote",
        )
        deadline = time.monotonic() + 15
        while (body := _ready(server))["active_kid"] != new_kid and time.monotonic() < deadline:
            time.sleep(0.2)
        assert body["active_kid"] == new_kid, server.log()
        kids = ", ".join(sorted((old_kid, new_kid)))
        assert body["warnings"] == [
            f"the workers do not sign with the same key ({kids}): one has not loaded the key "
            "ring yet, or could not (see the log)"
        ]
        assert (body["status"], body["workers"]) == ("ready", 2)

        os.kill(stopped, signal.SIGCONT)  # it reloads too: they agree again
        stopped = None
        deadline = time.monotonic() + 15
        while "warnings" in (body := _ready(server)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "warnings" not in body, body
        assert (body["active_kid"], body["workers"]) == (new_kid, 2)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        server.process.stop(timeout=15)


def test_a_worker_whose_loop_stopped_is_replaced_and_its_stacks_logged(tmp_path: Path) -> None:
    """A worker whose event loop no longer runs still takes its share of the connections, and
    each request it takes hangs, while the other worker answers the probes. The main process
    sees its heartbeat stop and replaces it."""
    extra = {"workers": 2, "worker_timeout": 10}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        # SIGUSR1 to a live worker writes where its threads are, and it goes on serving.
        first, second = _worker_pids(server.process.pid)[:2]
        os.kill(first, signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while "(most recent call first):" not in (err := server.process.stderr_path.read_text()):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert "in run_until_complete" in err  # the stack of the thread running its event loop
        assert first in _worker_pids(server.process.pid)

        # Frozen: it runs nothing at all (as a loop blocked on a stalled write runs nothing).
        os.kill(second, signal.SIGSTOP)
        started = time.monotonic()
        deadline = started + 30
        while second in _worker_pids(server.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        waited = time.monotonic() - started
        assert second not in _worker_pids(server.process.pid), server.log()
        assert 9 <= waited <= 20, waited  # worker_timeout (10 s), and a few seconds at most
        assert re.search(
            rf"ERROR app\.api\.watchdog: worker-\d \(pid {second}\) had not run its event loop "
            r"for 1\d s \(worker_timeout: 10\): killed, and another is started in its place",
            server.process.stderr_path.read_text(),
        ), server.log()

        # granian starts another; then every connection is answered again.
        deadline = time.monotonic() + 20
        while len(_worker_pids(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_worker_pids(server.process.pid)) == 2, server.log()
        answers = [
            httpx.get(
                f"{server.url}/token",
                params={"service": "registry.test"},
                auth=("alice", "pw"),
                timeout=5,
            ).status_code
            for _ in range(10)
        ]
        assert answers == [200] * 10
        assert first in _worker_pids(server.process.pid)  # the other one was left alone
        # Counted by the main process, summed into every worker's scrape.
        scraped = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert "registry_auth_stuck_workers_total 1.0" in scraped.splitlines(), scraped
    finally:
        server.process.stop(timeout=15)
