"""One benchmark run of the whole project: ``python -m bench.run_all`` (issue 7).

Pipeline position: above every tier. Runs each per-tier script present under bench/
(ingest vs validate-only, consumer vs raw COPY, NDJSON append at empty vs 1,000,000 events,
PostgreSQL, query), then starts a private stack (:mod:`bench.stack`: own Redis, a throwaway
PostgreSQL database, the real ingest and consumer processes), measures peak RSS of each tier
under a burst of 10,000-event bundles and end-to-end persisted events/s with
:mod:`leviathan_cp.loadgen`, and writes everything to bench/RESULTS.md with the machine
description and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.stack import Stack
from leviathan_cp import loadgen
from leviathan_cp.loadgen_bundles import BundleMaker

HERE = Path(__file__).resolve().parent
TIERS: dict[str, list[str]] = {
    "ingest": [],
    "consumer": ["--e2e"],
    "storage_ndjson": ["--events", "1000000"],
    "storage_postgres": [],
    "query": [],
}
PACKAGES = ("aiohttp", "arq", "redis", "asyncpg", "pydantic", "orjson")


def machine() -> list[str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in PACKAGES)
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return [
        f"- CPU: {cpu}, nproc {os.cpu_count()}, memory {mem_kib / 1024 / 1024:.1f} GiB",
        f"- {platform.platform()}, Python {platform.python_version()}",
        f"- {versions}",
        f"- {server.strip().split(' sha=')[0]}",
    ]


def run_tier(name: str, extra: list[str], timeout: float) -> str:
    if not (HERE / f"{name}.py").exists():
        return "(script not present in this checkout)"
    cmd = [sys.executable, "-m", f"bench.{name}", *extra]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return f"(timed out after {timeout:.0f} s)"
    out = done.stdout.strip() or done.stderr.strip()[-2000:]
    return f"$ python -m bench.{name} {' '.join(extra)}\n{out}\n(exit {done.returncode})"


async def burst(stack: Stack, bundles: int) -> dict[str, Any]:
    """Two clients posting 10,000-event bundles; returns statuses and peak RSS per tier."""
    maker = BundleMaker("burst", 0, 10_000, random.Random(7), "bench-burst")
    bodies = [orjson.dumps(maker._burst(f"burst-{i}")) for i in range(bundles)]
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
    statuses: dict[int, int] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def post(data: bytes) -> None:
            async with session.post(f"{stack.url}/v1/events/ingest", data=data) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

        for i in range(0, len(bodies), 2):
            await asyncio.gather(*(post(b) for b in bodies[i : i + 2]))
    await asyncio.sleep(3)  # let the consumer write the burst so its peak is included
    return {"statuses": statuses, "peak_rss_mib": stack.peaks()}


async def end_to_end(admin_dsn: str, seconds: float, workers: int) -> dict[str, Any]:
    try:
        stack = await Stack(admin_dsn).__aenter__()
    except RuntimeError as exc:
        return {"error": str(exc)}
    try:
        try:
            mem = await burst(stack, 6)
            args = loadgen._parse(stack.loadgen_argv(workers, seconds, "--visible-timeout", "180"))
            summary = await loadgen.run(args)
        except Exception as exc:
            logs = "\n".join(f"--- {n}\n{stack.log_tail(n)}" for n in ("ingest", "consumer"))
            return {"error": f"{type(exc).__name__}: {exc}", "logs": logs}
        return {"burst": mem, "loadgen": summary, "peak_rss_after_load_mib": stack.peaks()}
    finally:
        await stack.__aexit__(None, None, None)


def write_results(path: Path, command: str, tiers: dict[str, str], e2e: dict[str, Any]) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{command}`",
        "",
        f"Run at {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on:",
        "",
        *machine(),
        "",
    ]
    for name, out in tiers.items():
        lines += [f"## {name}", "", "```", out, "```", ""]
    lines += [
        "## end to end (one ingest + one consumer, PostgreSQL, own Redis)",
        "",
        "```json",
        orjson.dumps(e2e, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode(),
        "```",
        "",
    ]
    lines += [
        "## Long versions",
        "",
        "`LEVIATHAN_LONG=1 pytest tests/fuzz` runs 10,000 cases per fuzz property (150 in CI).",
        "`python -m bench.soak --minutes 10 --append-results` runs the 10-minute soak and appends",
        "its table below; the chaos suite is `pytest tests/chaos` (in CI).",
        "",
        "Note: persisted_events_per_s = stored unique / (load seconds + committed_after_s), where",
        "committed_after_s is the time after the last post until /v1/stats shows no lag and",
        "nothing pending (every entry acked after its commit); the stored-count check pages",
        "GET /v1/events afterwards, untimed (visible_after_s).",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--seconds", type=float, default=20.0, help="end-to-end load duration")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--tier-timeout", type=float, default=600.0)
    p.add_argument("--skip-tiers", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args(argv)
    tiers: dict[str, str] = {}
    if not args.skip_tiers:
        for name, extra in TIERS.items():
            tiers[name] = run_tier(name, extra, args.tier_timeout)
            print(f"== {name}\n{tiers[name]}", flush=True)
    e2e = asyncio.run(end_to_end(args.admin_dsn, args.seconds, args.workers))
    print(orjson.dumps(e2e, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    command = "python -m bench.run_all" + ("" if argv is None else " " + " ".join(argv))
    if argv is None and len(sys.argv) > 1:
        command += " " + " ".join(sys.argv[1:])
    write_results(args.out, command, tiers, e2e)
    return 0 if "error" not in e2e else 1


if __name__ == "__main__":
    raise SystemExit(main())
