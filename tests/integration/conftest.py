"""Fixtures starting the real programs: our token service, docker-registry 2.8, skopeo.

Stacks (token service + registry) are pooled per module and keyed by their options, so the
tests of a module share one stack per kind instead of paying a start each. Tests that change a
stack (restart the registry, rotate keys) take a private one from `stack_factory`.
A missing program is an error (MissingProgramError), never a skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support.oci import OciImage, build_image
from tests.integration.support.skopeo import Creds, Skopeo
from tests.integration.support.stack import Stack, start_stack

USERS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}
ALICE = Creds("alice", USERS["alice"])
BOB = Creds("bob", USERS["bob"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, attach the logs of every stack the test used (registry says why)."""
    report = yield
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        for name, value in funcargs.items():
            if isinstance(value, Stack):
                report.sections.append((f"logs of stack `{name}`", value.logs()))
    return report


class StackPool:
    """Stacks started on first use, keyed by options; all stopped at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._stacks: dict[tuple[Any, ...], Stack] = {}

    def get(self, algorithm: str = "RS256", *, x5c: bool = True) -> Stack:
        key = (algorithm, x5c)
        if key not in self._stacks:
            name = f"{algorithm}-{'x5c' if x5c else 'kid'}"
            self._stacks[key] = start_stack(
                self.workdir / name, algorithm=algorithm, users=USERS, x5c=x5c
            )
        return self._stacks[key]

    def stop_all(self) -> None:
        for stack in self._stacks.values():
            stack.stop()
        self._stacks.clear()


@pytest.fixture(scope="module")
def stack_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackPool]:
    pool = StackPool(tmp_path_factory.mktemp("stacks"))
    yield pool
    pool.stop_all()


@pytest.fixture
def stack(stack_pool: StackPool) -> Stack:
    """The default stack: RS256 key, x5c on, users alice and bob."""
    return stack_pool.get()


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start private stacks (`start_stack` options); stopped after the test."""
    started: list[Stack] = []

    def start(**options: Any) -> Stack:
        options.setdefault("users", USERS)
        started.append(start_stack(tmp_path / f"stack{len(started)}", **options))
        return started[-1]

    yield start
    for one in started:
        one.stop()


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo(tmp_path / "skopeo")


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., OciImage]:
    """Build a distinct OCI layout per call: make_image(tag="1.0")."""
    count = 0

    def make(tag: str = "1.0", content: bytes | None = None) -> OciImage:
        nonlocal count
        count += 1
        return build_image(tmp_path / f"image{count}", tag, content=content)

    return make
