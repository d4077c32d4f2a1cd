"""Whole-stack load: peak memory under 10,000-event bundles, then persisted events/s.

Pipeline position: wraps the whole pipeline. ``python -m bench.stack_load [--seconds S]
[--workers W] [--burst N]`` starts a private stack (:mod:`bench.stack`: own Redis, a
throwaway PostgreSQL database, the real ingest and consumer processes), posts N bundles of
10,000 events two at a time and samples each tier's peak RSS, then runs the ``leviathan-cp
bench`` load generator (:mod:`leviathan_cp.loadgen`) for S seconds and prints accepted and
persisted events/s and whether every accepted event was stored exactly once.

persisted events/s = stored unique / (load seconds + committed_after_s), where
committed_after_s is the time after the last post until /v1/stats shows no lag and nothing
pending (every entry acked after its commit); the stored-count check pages GET /v1/events
afterwards, untimed (visible_after_s).
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

import aiohttp
import orjson

from bench.stack import Stack
from leviathan_cp import loadgen
from leviathan_cp.loadgen_bundles import BundleMaker


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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        stack = await Stack(args.admin_dsn).__aenter__()
    except RuntimeError as exc:
        return {"error": str(exc)}
    try:
        try:
            mem = await burst(stack, args.burst)
            argv = stack.loadgen_argv(args.workers, args.seconds, "--visible-timeout", "180")
            summary = await loadgen.run(loadgen._parse(argv))
        except Exception as exc:
            logs = "\n".join(f"--- {n}\n{stack.log_tail(n)}" for n in ("ingest", "consumer"))
            return {"error": f"{type(exc).__name__}: {exc}", "logs": logs}
        return {"burst": mem, "loadgen": summary, "peak_rss_after_load_mib": stack.peaks()}
    finally:
        await stack.__aexit__(None, None, None)


def report(result: dict[str, Any]) -> list[str]:
    """The lines bench.run_all reads its figures from."""
    load = result["loadgen"]
    peaks = result["peak_rss_after_load_mib"]
    missing = abs(load["accepted_unique"] - load["stored_unique"])
    doubled = load["stored"] - load["stored_unique"]
    return [
        f"burst statuses: {result['burst']['statuses']}",
        f"accepted: {load['accepted_events_per_s']:,.0f} events/s",
        f"accepted p99: {load['latency_ms']['p99']:.2f} ms",
        f"persisted: {load['persisted_events_per_s']:,.0f} events/s",
        "peak RSS MiB: " + " ".join(f"{name} {mib:.1f}" for name, mib in peaks.items()),
        f"missing or doubled: {missing + doubled}",
    ]


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--seconds", type=float, default=20.0, help="load duration")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--burst", type=int, default=6, help="10,000-event bundles before the load")
    args = p.parse_args()
    if args.seconds <= 0 or args.workers < 1 or args.burst < 1:
        p.error("--seconds must be above 0, --workers and --burst at least 1")
    result = asyncio.run(run(args))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    if "error" in result:
        return 1
    print("\n".join(report(result)))
    return 0 if result["loadgen"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(cli())
