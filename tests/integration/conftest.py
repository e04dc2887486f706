"""Fixtures starting the real programs: our token service, docker-registry 2.8, skopeo.

Stacks (token service + registry) are pooled for the session and keyed by their options, so
tests share one stack per kind instead of paying a start each; they keep apart by using their
own repository names. Tests that change a
stack (restart the registry, rotate keys) take a private one from `stack_factory`.
A missing program is an error (MissingProgramError), never a skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support.oci import OciImage, build_image
from tests.integration.support.skopeo import Skopeo
from tests.integration.support.stack import USERS, Stack, StackPool, start_stack


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
            if isinstance(value, Stack | StackPool):
                report.sections.append((f"logs of `{name}`", value.logs()))
    return report


@pytest.fixture(scope="session")
def stack_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackPool]:
    """Shared by every test: never restart, re-key or reconfigure a pooled stack."""
    pool = StackPool(tmp_path_factory.mktemp("stacks"))
    yield pool
    pool.stop_all()


@pytest.fixture
def stack(stack_pool: StackPool) -> Stack:
    """The default stack: RS256 key, x5c on, user alice (support/stack.py USERS)."""
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
