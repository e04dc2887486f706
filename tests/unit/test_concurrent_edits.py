"""Two commands editing one users or robots file at once: both changes are kept. Without the
edit lock each wrote what it had read plus its own change, and every one said it was done."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from app.authn.robot_store import create_robot, list_robots, revoke_robot
from app.authn.users import list_accounts, remove_user, set_user

EDITORS = 8


def _add_user(path: str, number: int, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    set_user(Path(path), f"user{number}", "pw", rounds=4)


def _add_robot(path: str, number: int, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    create_robot(Path(path), f"bot{number}", ["ci"], None)


def _run_together(target: object, path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(EDITORS)
    editors = [
        context.Process(target=target, args=(str(path), number, start))  # type: ignore[arg-type]
        for number in range(EDITORS)
    ]
    for editor in editors:
        editor.start()
    for editor in editors:
        editor.join(60)
        assert editor.exitcode == 0


def test_users_added_at_once_are_all_kept(tmp_path: Path) -> None:
    users = tmp_path / "users.htpasswd"
    _run_together(_add_user, users)
    assert sorted(list_accounts(users)) == sorted(f"user{n}" for n in range(EDITORS))
    remove_user(users, "user3")
    assert "user3" not in list_accounts(users)


def test_robots_created_at_once_are_all_kept(tmp_path: Path) -> None:
    robots = tmp_path / "robots.yaml"
    robots.write_text("robots: {}\n")
    _run_together(_add_robot, robots)
    assert len(list_robots(robots)) == EDITORS
    revoke_robot(robots, "bot3")
    assert len(list_robots(robots)) == EDITORS - 1
