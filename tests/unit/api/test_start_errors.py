"""A start that cannot work stops with one line naming the setting: an address that cannot be
bound, an audit log that cannot be opened (no server starts here)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from app.api import server, supervisor
from app.api.app import create_app
from app.api.server import ServerOptions, check_listen
from app.errors import ConfigError
from app.settings import Settings


def test_a_port_in_use_names_listen_before_any_server_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(server, "run_uvicorn", lambda *_: started.append("uvicorn"))
    monkeypatch.setattr(supervisor, "run_granian", lambda *_: started.append("granian"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for workers in (1, 2):
            busy = settings.model_copy(update={"workers": workers})
            expected = re.escape(f"--host/--port: cannot listen on 127.0.0.1:{port}")
            with pytest.raises(ConfigError, match=expected):
                server.serve(busy, "127.0.0.1", port)
            listening = busy.model_copy(update={"listen": f"127.0.0.1:{port}"})
            with pytest.raises(ConfigError, match=re.escape("config: listen: cannot listen")):
                server.serve(listening, None, None)
    assert started == []


def test_a_host_that_does_not_resolve_names_listen() -> None:
    expected = re.escape("listen: cannot listen on no-such-host.invalid:5001")
    with pytest.raises(ConfigError, match=expected):
        check_listen(ServerOptions("no-such-host.invalid", 5001, 1))


def test_a_free_port_passes_and_stays_free() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    check_listen(ServerOptions("127.0.0.1", port, 1))
    with socket.create_server(("127.0.0.1", port)):  # the trial bind was released
        pass


@pytest.mark.parametrize("where", ["dir", "/proc/no-such/audit.jsonl"])
def test_an_audit_log_that_cannot_be_opened_names_audit_log(
    settings: Settings, tmp_path: Path, where: str
) -> None:
    path = str(tmp_path) if where == "dir" else where
    with pytest.raises(ConfigError, match=re.escape(f"audit_log: cannot open {path}: ")):
        create_app(settings.model_copy(update={"audit_log": path}))
