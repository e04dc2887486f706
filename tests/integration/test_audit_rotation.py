"""logrotate on a running server (two granian workers): every worker moves to the new file,
and no decision is lost between the moved file and the new one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.support.authserver import start_auth_server

pytestmark = pytest.mark.integration


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_worker_writes_to_the_new_file_after_logrotate_moves_the_old_one(
    tmp_path: Path,
) -> None:
    audit = tmp_path / "log" / "audit.jsonl"
    audit.parent.mkdir()  # the service refuses a missing directory
    extra = {"workers": 2, "audit_log": str(audit), "reload_interval": 0.2}
    server = start_auth_server(tmp_path, users={"alice": "pw"}, extra_settings=extra)
    try:
        sent = 0
        for _ in range(10):
            assert server.token([], ("alice", "pw")).status_code == 200
            sent += 1
        rotated = audit.with_name("audit.jsonl.1")
        audit.rename(rotated)
        deadline = time.monotonic() + 10  # a few polls: both workers reopen the path
        while server.log().count("was moved away: writing to a new file there") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        for _ in range(20):  # spread over both workers (each connection is a new one)
            assert server.token([], ("alice", "pw")).status_code == 200
            sent += 1
        old, new = _lines(rotated), _lines(audit)
        assert len(old) == 10, server.log()
        assert len(new) == 20, server.log()
        assert len(old) + len(new) == sent
        assert {line["account"] for line in new} == {"alice"}
        assert server.log().count("was moved away: writing to a new file there") == 2
    finally:
        server.stop()
