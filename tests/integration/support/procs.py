"""Real programs under test: free loopback ports, start with log files, wait for HTTP, stop by PID.

Every failure says what happened and shows the end of the program's own log, so a red test
explains itself without re-running anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

LOG_TAIL_CHARS = 4000


class MissingProgramError(RuntimeError):
    """A real program the integration tests need is not installed: an error, never a skip."""


class ProcessError(RuntimeError):
    """A program did not start, did not get ready, or died; the message holds its log."""


def require_program(name: str, *, package: str) -> str:
    """The absolute path of `name` on PATH, or MissingProgramError saying what to install."""
    path = shutil.which(name)
    if path is None:
        raise MissingProgramError(
            f"`{name}` is not on PATH: the integration tests need the Debian package {package} "
            f"(apt-get install {package}; scripts/test installs it when run as root)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """A started program, its command line and the files its stdout/stderr go to."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self, limit: int = LOG_TAIL_CHARS) -> str:
        """The end of stderr and stdout, labelled, for failure messages."""
        parts = []
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            if len(text) > limit:
                text = "...\n" + text[-limit:]
            parts.append(f"--- {self.name} {label} ({path}) ---\n{text}")
        return "\n".join(parts)

    def describe(self) -> str:
        state = "running" if self.running else f"exited with {self.popen.returncode}"
        return f"{self.name} (pid {self.pid}, {state}): {' '.join(self.argv)}"

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


def start_process(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    drop_env_prefixes: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start `argv` with stdout/stderr in log_dir/<name>.{out,err}.log (appended on restart).

    The environment is ours plus `env`, minus variables starting with `drop_env_prefixes`
    (so a developer's REGISTRY_AUTH_* cannot change what a test starts).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{name}.out.log"
    stderr_path = log_dir / f"{name}.err.log"
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not (drop_env_prefixes and key.startswith(drop_env_prefixes))
    }
    # The child gets its own copies of the descriptors: ours are closed as soon as it runs.
    with stdout_path.open("ab") as stdout, stderr_path.open("ab") as stderr:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env={**inherited, **(env or {})},
                cwd=cwd,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name}: {' '.join(argv)}: {exc}") from exc
    return ManagedProcess(name, list(argv), popen, stdout_path, stderr_path)


def wait_for_http(
    process: ManagedProcess,
    url: str,
    *,
    ready: Callable[[httpx.Response], bool] = lambda _: True,
    timeout: float = 20.0,
    interval: float = 0.05,
) -> httpx.Response:
    """Poll `url` until `ready(response)`; ProcessError with the log if it dies or times out."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not process.running:
                raise ProcessError(
                    f"{process.describe()} died before {url} answered\n{process.log()}"
                )
            try:
                response = client.get(url)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if ready(response):
                    return response
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            time.sleep(interval)
    process.stop()
    raise ProcessError(
        f"{process.describe()}: {url} not ready after {timeout:.0f}s (last: {last})\n"
        f"{process.log()}"
    )


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run a short command; ProcessError with its output when it fails."""
    result = subprocess.run(
        list(argv),
        input=input_text,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise ProcessError(
            f"{what} failed with {result.returncode}: {' '.join(argv)}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result


@contextmanager
def killed_if_left(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """For a process a test started itself and means to stop: SIGKILL, and reaped, if it is
    still running when the block ends (a failed assertion on the way)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until_serving(process: subprocess.Popen[bytes], url: str, timeout: float = 60) -> None:
    """Until GET `url` answers 200; fails when the process exits first, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, f"exited with {process.returncode} before serving"
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout} s"
        time.sleep(0.2)
