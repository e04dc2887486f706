"""Driving the service with `wrk` (Debian package `wrk`: a C load generator in its own process,
so the client does not steal the Python CPU it measures) and the raw signing rate."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

LUA = Path(__file__).parent / "lua"
TOKEN_PATH = "/token?service=registry.local&scope=repository:team/app:pull,push"


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_command(
    url: str, script: str, *, seconds: float, connections: int, threads: int = 1
) -> list[str]:
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "30s", "-s", str(LUA / script), url,
    ]  # fmt: skip


def start_wrk(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {**os.environ, "BENCH_LUA_DIR": str(LUA), **env}
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=full_env)


def finish_wrk(process: subprocess.Popen[str]) -> Result:
    out, _ = process.communicate(timeout=600)
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{out}")
    data = json.loads(line.removeprefix("BENCH "))
    return Result(
        data["requests"],
        data["duration_us"] / 1e6,
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        data["non_2xx"] + data["socket_errors"],
    )


def run_wrk(command: list[str], env: dict[str, str]) -> Result:
    return finish_wrk(start_wrk(command, env))


def _sign_for(seconds: float) -> int:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = b"x" * 1800  # the size of a signing input: header with x5c + claims, base64url
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        count += 1
    return count


def raw_sign_per_second(seconds: float, processes: int) -> float:
    """RSA-2048 RS256 signatures per second with every core: a process per core doing nothing
    but sign (the physical limit for fresh tokens on this machine)."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        counts = pool.map(_sign_for, [seconds] * processes)
    return sum(counts) / seconds
