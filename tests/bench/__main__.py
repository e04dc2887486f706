"""The benchmark: `scripts/bench` (or `.venv/bin/python -m tests.bench [--seconds N]`).

Starts the service (generated key, 5000 users, `workers: 0` = one granian worker per core),
drives it with wrk on loopback, measures the raw RS256 signing rate of this machine in the same
run (right before and right after the token scenarios), prints a table, and as its last line one
JSON object. Exit status 0 whatever the numbers:
this reports, it does not judge (the targets are printed beside the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.load import (
    TOKEN_PATH,
    Result,
    finish_wrk,
    raw_sign_per_second,
    run_wrk,
    start_wrk,
    wrk_command,
)
from tests.bench.service import Server, basic, make_workdir, start_server

USERS = 5000
CORES = len(os.sched_getaffinity(0))


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument("--seconds", type=float, default=8, help="length of each scenario")
    parser.add_argument("--memory-requests", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="registry-auth-bench-") as tmp:
        report = run(make_workdir(Path(tmp), USERS), args.seconds, args.memory_requests)
    print_table(report)
    print(json.dumps(report, sort_keys=True))


def run(workdir: Path, seconds: float, memory_requests: int) -> dict[str, Any]:
    report: dict[str, Any] = {"cores": CORES, "seconds_per_scenario": seconds}
    # The machine's speed drifts (shared hosts): signing is measured right before and right
    # after the two token scenarios, and the ratios use the mean of both.
    report["raw_sign_per_s_before"] = round(raw_sign_per_second(seconds, CORES), 1)
    auth = {"BENCH_AUTH": basic("user0")}
    fresh = start_server(workdir, "fresh", token_reuse=False)
    try:
        _drive_and_record(report, "fresh", fresh, seconds, auth)
    finally:
        fresh.stop()
    server = start_server(workdir, "reuse")
    try:
        cpu_before = server.cpu_seconds()
        _drive_and_record(report, "reuse", server, seconds, auth)
        report["reuse_worker_cpu_share"] = _worker_shares(cpu_before, server.cpu_seconds())
        report["raw_sign_per_s_after"] = round(raw_sign_per_second(seconds, CORES), 1)
        _cold(report, server, workdir, seconds)
        _memory(report, server, auth, memory_requests)
    finally:
        server.stop()
    _ratios(report)
    return report


def _drive_and_record(
    report: dict[str, Any], name: str, server: Server, seconds: float, env: dict[str, str]
) -> None:
    """One token scenario, and the service's CPU time per token in it (every process)."""
    before = sum(server.cpu_seconds().values())
    result = _drive(server, seconds, env)
    used = sum(server.cpu_seconds().values()) - before
    _record(report, name, result)
    report[f"{name}_cpu_us_per_token"] = round(used / max(result.requests, 1) * 1e6)


def _drive(server: Server, seconds: float, env: dict[str, str]) -> Result:
    url = server.url + TOKEN_PATH
    run_wrk(wrk_command(url, "basic.lua", seconds=2, connections=16), env)  # warm-up
    return run_wrk(wrk_command(url, "basic.lua", seconds=seconds, connections=16), env)


def _record(report: dict[str, Any], name: str, result: Result) -> None:
    report[f"{name}_tokens_per_s" if name != "cold" else "cold_logins_per_s"] = round(
        result.per_second, 1
    )
    report[f"{name}_p50_ms"] = round(result.p50_ms, 2)
    report[f"{name}_p99_ms"] = round(result.p99_ms, 2)
    report[f"{name}_failures"] = result.failures


def _cold(report: dict[str, Any], server: Server, workdir: Path, seconds: float) -> None:
    """A storm of distinct logins (each one a bcrypt check) with a liveness probe beside it."""
    env = {"BENCH_AUTH_FILE": str(workdir / "auth.txt")}
    cpu_before, started = server.cpu_seconds(), time.monotonic()
    storm = start_wrk(
        wrk_command(server.url + TOKEN_PATH, "distinct.lua", seconds=seconds, connections=32), env
    )
    time.sleep(1)  # let the bcrypt queue fill first
    probe = run_wrk(
        wrk_command(server.url + "/healthz", "probe.lua", seconds=seconds - 2, connections=2), {}
    )
    result = finish_wrk(storm)
    busy = sum(server.cpu_seconds().values()) - sum(cpu_before.values())
    _record(report, "cold", result)
    report["cold_cores_busy"] = round(busy / (time.monotonic() - started), 2)
    report["healthz_p50_ms_during_cold"] = round(probe.p50_ms, 2)
    report["healthz_p99_ms_during_cold"] = round(probe.p99_ms, 2)
    report["healthz_failures_during_cold"] = probe.failures


def _memory(report: dict[str, Any], server: Server, auth: dict[str, str], total: int) -> None:
    """RSS after 10% of `total` requests, then after all of them (reuse on, to get there fast).

    wrk cannot stop after a count, so it runs in short rounds until each mark is passed."""
    url = server.url + TOKEN_PATH
    done, rate = 0, max(report["reuse_tokens_per_s"], 100.0)
    for label, mark in (("rss_kib_after_first", total // 10), ("rss_kib_after_all", total)):
        while done < mark:
            seconds = min(10.0, max(1.0, (mark - done) / rate))
            result = run_wrk(wrk_command(url, "basic.lua", seconds=seconds, connections=16), auth)
            done += result.requests
            rate = max(result.per_second, 100.0)
        report[label] = server.rss_kib()
        report[label.replace("rss_kib", "requests")] = done
    report["memory_requests"] = total
    report["rss_growth"] = round(report["rss_kib_after_all"] / report["rss_kib_after_first"], 3)


def _worker_shares(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """Each worker's share of the CPU the workers used: even = the load really is spread."""
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after if pid in before}
    workers = sorted(used.items())[1:] if len(used) > 1 else list(used.items())
    total = sum(u for _, u in workers) or 1.0
    return [round(u / total, 2) for _, u in workers]


def _ratios(report: dict[str, Any]) -> None:
    raw = (report["raw_sign_per_s_before"] + report["raw_sign_per_s_after"]) / 2
    report["raw_sign_per_s"] = round(raw, 1)
    # One signature's CPU time, for reading the *_cpu_us_per_token figures beside it.
    report["sign_cpu_us"] = round(report["cores"] / raw * 1e6)
    report["fresh_ratio"] = round(report["fresh_tokens_per_s"] / raw, 3)
    report["reuse_ratio"] = round(report["reuse_tokens_per_s"] / raw, 3)
    report["targets"] = {
        "fresh_ratio>=0.6": report["fresh_ratio"] >= 0.6,
        "reuse>=1.5x_raw": report["reuse_ratio"] >= 1.5,
        "healthz_p99<20ms": report["healthz_p99_ms_during_cold"] < 20,
        "rss_within_20%": report["rss_growth"] <= 1.2,
    }


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("raw RS256 signing, all cores", f"{r['raw_sign_per_s']:.0f}/s", "", ""),
        ("  (before, after the scenarios)",
         f"{r['raw_sign_per_s_before']:.0f}/{r['raw_sign_per_s_after']:.0f}", "", ""),
        ("fresh tokens (reuse off)", f"{r['fresh_tokens_per_s']:.0f}/s",
         f"{r['fresh_p50_ms']}", f"{r['fresh_p99_ms']}"),
        ("reused tokens (reuse on)", f"{r['reuse_tokens_per_s']:.0f}/s",
         f"{r['reuse_p50_ms']}", f"{r['reuse_p99_ms']}"),
        ("cold logins (bcrypt each)", f"{r['cold_logins_per_s']:.0f}/s",
         f"{r['cold_p50_ms']}", f"{r['cold_p99_ms']}"),
        ("/healthz during cold logins", "", f"{r['healthz_p50_ms_during_cold']}",
         f"{r['healthz_p99_ms_during_cold']}"),
    ]  # fmt: skip
    print(f"machine: {r['cores']} cores; {r['seconds_per_scenario']:.0f} s per scenario")
    print(f"| {'scenario':<30} | {'rate':>9} | {'p50 ms':>8} | {'p99 ms':>8} |")
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
    for name, rate, p50, p99 in rows:
        print(f"| {name:<30} | {rate:>9} | {p50:>8} | {p99:>8} |")
    print(
        f"fresh_ratio {r['fresh_ratio']} (target >= 0.6); reuse {r['reuse_ratio']} x raw "
        f"(target >= 1.5); CPU per token: signature alone {r['sign_cpu_us']} us, fresh "
        f"{r['fresh_cpu_us_per_token']} us, reused {r['reuse_cpu_us_per_token']} us; "
        f"cold: {r['cold_cores_busy']} cores busy; reuse CPU per worker "
        f"{r['reuse_worker_cpu_share']}; RSS {r['rss_kib_after_first']} KiB after "
        f"{r['requests_after_first']} requests, {r['rss_kib_after_all']} KiB after "
        f"{r['requests_after_all']} (x{r['rss_growth']}, target <= 1.2)"
    )


if __name__ == "__main__":
    main()
