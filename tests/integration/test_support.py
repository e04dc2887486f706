"""The test support itself: if it lies, every integration test lies with it."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support.oci import OciImage, manifest_digest, read_layer_file
from tests.integration.support.procs import (
    MissingProgramError,
    ProcessError,
    free_port,
    require_program,
    start_process,
    wait_for_http,
)
from tests.integration.support.skopeo import Skopeo
from tests.integration.support.stack import ALICE, Stack

MakeImage = Callable[..., OciImage]


def test_a_missing_program_is_an_error_naming_the_package() -> None:
    with pytest.raises(MissingProgramError, match="Debian package no-such-package"):
        require_program("no-such-program-registry-auth", package="no-such-package")


def test_free_port_is_on_loopback_and_unused() -> None:
    port = free_port()
    assert 1024 <= port < 65536


def test_wait_for_http_shows_the_log_of_a_program_that_died(tmp_path: Path) -> None:
    code = "import sys; print('boom: listen address in use', file=sys.stderr); sys.exit(3)"
    process = start_process("dies", [sys.executable, "-c", code], tmp_path)

    with pytest.raises(ProcessError, match="boom: listen address in use") as caught:
        wait_for_http(process, f"http://127.0.0.1:{free_port()}/", timeout=10)
    assert "died" in str(caught.value)
    assert process.popen.returncode == 3


def test_stop_kills_a_program_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    process = start_process("stubborn", [sys.executable, "-c", code], tmp_path)
    deadline = time.monotonic() + 10
    while "ready" not in process.stdout_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)

    status = process.stop(timeout=0.5)

    assert status == -9  # SIGTERM ignored, then SIGKILL
    assert not process.running


def test_skopeo_reads_the_oci_layout_we_build(skopeo: Skopeo, make_image: MakeImage) -> None:
    image = make_image("2.0")

    raw = skopeo.inspect(image.ref, raw=True)
    info = skopeo.inspect(image.ref)

    assert raw.ok, raw
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == image.manifest_digest
    assert info.ok, info
    assert info.json()["Digest"] == image.manifest_digest  # type: ignore[index]
    assert manifest_digest(image.path, "2.0") == image.manifest_digest
    assert read_layer_file(image.path, "2.0") == image.content


def test_each_image_has_its_own_blobs(make_image: MakeImage) -> None:
    """No blob is shared, so no test depends on what a cache or registry saw before."""
    first, second = make_image(), make_image()

    assert {first.layer_digest, first.config_digest, first.manifest_digest}.isdisjoint(
        {second.layer_digest, second.config_digest, second.manifest_digest}
    )


def test_skopeo_keeps_its_blob_cache_where_it_says(
    stack: Stack, skopeo: Skopeo, make_image: MakeImage
) -> None:
    image = make_image()

    pushed = skopeo.copy(image.ref, stack.registry.ref("support/cache", "1"), dest_creds=ALICE)

    assert pushed.ok, pushed
    assert (skopeo.blob_cache_dir / "blob-info-cache-v1.boltdb").is_file(), skopeo.cache_isolation
