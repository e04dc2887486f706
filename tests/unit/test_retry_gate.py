"""A worker waiting for a broken file tries to start again when a file changed, not on every
poll (RetryGate, app_once_files_load); a failed reload is tried again after a chmod too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.api import workers
from app.keys.model import Algorithm
from app.keys.store import generate_key
from app.reload import Reloadable, RetryGate, files_named
from app.settings import Settings, load_settings

GOOD_ACL = "rules:\n  - match: {name: 'team/**'}\n    allow: [pull]\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def acl_settings(tmp_path: Path) -> Settings:
    keys = tmp_path / "keys"
    keys.mkdir()
    generate_key(keys, Algorithm.RS256)
    acl = tmp_path / "acl.yaml"
    acl.write_text(GOOD_ACL)
    return load_settings(
        overrides={
            "keys_dir": str(keys),
            "htpasswd": None,
            "acl": str(acl),
            "realm": "http://auth.test/token",
            "reload_interval": 0.5,
        }
    )


def test_the_files_are_every_path_the_settings_name_nested_and_listed(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "keys_dir": str(tmp_path / "keys"),
            "acl": str(tmp_path / "acl.yaml"),
            "realm": "http://auth.test/token",
            "htpasswd": None,  # the embedded defaults' (refused beside auth_backends)
            "auth_backends": [
                {"type": "htpasswd", "path": str(tmp_path / "a.htpasswd")},
                {"type": "static", "path": str(tmp_path / "static.yaml")},
            ],
            "tls": {"cert": str(tmp_path / "tls.crt"), "key": str(tmp_path / "tls.key")},
        }
    )
    files = set(files_named(settings))
    assert {
        tmp_path / "keys",
        tmp_path / "acl.yaml",
        tmp_path / "a.htpasswd",
        tmp_path / "static.yaml",
        tmp_path / "tls.crt",
        tmp_path / "tls.key",
    } <= files


def test_untouched_files_are_not_tried_again_until_a_minute_passed(acl_settings: Settings) -> None:
    clock = Clock()
    gate = RetryGate(acl_settings, every=60, clock=clock)
    assert not gate.worth_trying()
    clock.now += 59
    assert not gate.worth_trying()
    clock.now += 2
    assert gate.worth_trying()
    assert not gate.worth_trying()  # that counted as the try


def test_a_rewritten_file_is_tried_again_once(acl_settings: Settings) -> None:
    gate = RetryGate(acl_settings, clock=Clock())
    assert acl_settings.acl is not None
    replacement = acl_settings.acl.with_suffix(".new")
    replacement.write_text(GOOD_ACL + "# fixed\n")
    replacement.replace(acl_settings.acl)  # as an editor or a ConfigMap swap does
    assert gate.worth_trying()
    assert not gate.worth_trying()


def test_a_chmod_alone_is_a_change(acl_settings: Settings) -> None:
    """Fixing a key file's mode changes no content, nor the modification time."""
    key_file = next(p for p in acl_settings.keys_dir.iterdir() if p.suffix == ".pem")
    gate = RetryGate(acl_settings, clock=Clock())
    key_file.chmod(0o644)
    assert gate.worth_trying()


def test_a_file_added_to_the_key_directory_is_a_change(acl_settings: Settings) -> None:
    gate = RetryGate(acl_settings, clock=Clock())
    generate_key(acl_settings.keys_dir, Algorithm.ES256)
    assert gate.worth_trying()


def test_a_waiting_worker_builds_its_app_again_only_once_the_file_changed(
    acl_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert acl_settings.acl is not None
    acl = acl_settings.acl
    acl.write_text("rules: [")  # broken YAML
    builds: list[str] = []
    real_create_app = workers.create_app

    def counting_create_app(settings: Settings) -> Any:
        builds.append(acl.read_text())
        return real_create_app(settings)

    polls = 0

    def sleep(_seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 10:  # nine polls of untouched files, then the operator fixes the ACL
            acl.write_text(GOOD_ACL)

    monkeypatch.setattr(workers, "create_app", counting_create_app)
    monkeypatch.setattr(workers.time, "sleep", sleep)
    app = workers.app_once_files_load(acl_settings)

    assert app is not None
    assert builds == ["rules: [", GOOD_ACL]  # one failed try, then one after the fix
    assert polls == 10


def test_a_reload_that_failed_on_a_files_mode_is_tried_again_after_its_chmod(
    tmp_path: Path,
) -> None:
    """The fix of a file the service refused is often a chmod or chown, which changes no
    content: a Reloadable that waited for new content never loaded the fixed file."""
    path = tmp_path / "secret.txt"
    path.write_text("v1")
    path.chmod(0o600)

    def load() -> str:
        if path.stat().st_mode & 0o077:
            raise ValueError(f"{path} is readable by others")
        return path.read_text()

    value = Reloadable("secret", load, lambda: [path])
    path.write_text("v2")
    path.chmod(0o644)
    assert value.reload_if_changed() is False  # refused, v1 kept
    assert (value.current, value.last_error is not None) == ("v1", True)
    assert value.reload_if_changed() is False  # nothing new: not tried again
    path.chmod(0o600)
    assert value.reload_if_changed() is True
    assert (value.current, value.last_error) == ("v2", None)
