"""A users file reloaded with no account left: valid, but most likely a placeholder deployed
over the real file (every login then fails, refresh tokens of the dropped accounts die)."""

from __future__ import annotations

import logging
from pathlib import Path

import bcrypt
import pytest

from app.authn.build import build_authentication
from app.settings import load_settings

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


@pytest.mark.parametrize("kind", ["htpasswd", "users"])
def test_a_reload_that_empties_a_users_file_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    path = tmp_path / "users.file"
    if kind == "htpasswd":
        path.write_text(f"alice:{HASH}\nbob:{HASH}\n")
        empty = "# replace with a file from `registry-auth users add`\n"
        overrides = {"htpasswd": str(path)}
    else:
        path.write_text(f"users:\n  alice: {{password: '{HASH}'}}\n  bob: {{password: '{HASH}'}}\n")
        empty = "users: {}\n"
        overrides = {"htpasswd": None, "auth_backends": [{"type": "static", "path": str(path)}]}
    settings = load_settings(overrides={"keys_dir": str(tmp_path / "keys"), **overrides})
    (watched,) = build_authentication(settings).reloadables
    caplog.set_level(logging.INFO, "app.reload")
    path.write_text(empty)
    assert watched.reload()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{watched.name} now lists no account (it listed 2): every login through it fails, "
        "and a refresh token of an account it no longer lists is revoked at its next use"
    ]
    caplog.clear()
    path.write_text(
        f"alice:{HASH}\n" if kind == "htpasswd" else f"users:\n  alice: {{password: '{HASH}'}}\n"
    )
    assert watched.reload()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # filling it: fine


def test_files_are_told_apart_by_backend_name_never_by_path(tmp_path: Path) -> None:
    # What /readyz and /metrics (registry_auth_reload_failing{files=...}) show: anyone may ask.
    staff, ci = tmp_path / "staff.htpasswd", tmp_path / "ci.htpasswd"
    for path in (staff, ci):
        path.write_text(f"alice:{HASH}\n")
    backends = [
        {"type": "htpasswd", "path": str(staff)},
        {"type": "htpasswd", "path": str(ci), "name": "ci"},
    ]
    overrides = {"htpasswd": None, "auth_backends": backends}
    settings = load_settings(overrides={"keys_dir": str(tmp_path / "keys"), **overrides})
    kinds = [watched.kind for watched in build_authentication(settings).reloadables]
    assert kinds == ["htpasswd", "htpasswd ci"]
