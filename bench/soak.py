"""Soak: the whole pipeline under repeated load for minutes, watching for leaks and losses.

Pipeline position: wraps everything, like :mod:`bench.stack_load` (run_all's stack tier): a private
stack (own redis-server with AOF, throwaway PostgreSQL database, real ``python -m ingest`` and
``python -m consumer``) driven by the ``leviathan-cp bench`` load generator in rounds. Each
round loads for ``--round`` seconds, waits until the queue is drained and every accepted
event is stored exactly once, then samples each process's resident memory. At the end every
partition's hash chain is verified. Rounds, not one long flat-out run, because the ingest
tier outpaces one consumer on this machine: a 10-minute flat-out run would only measure a
growing Redis backlog.

    python -m bench.soak --minutes 10

It prints a markdown table of the rounds. bench/RESULTS.md is written by ``python -m
bench.run_all`` alone; put a soak's table in the commit message that it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from bench.stack import Stack
from leviathan_cp import loadgen
from storage.config import StorageSettings, create_store


def rss_mib(pid: int) -> float:
    """Current resident set size (VmRSS), in MiB: growth across rounds would be a leak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _verify(dsn: str, partitions: int) -> list[str]:
    store = create_store(StorageSettings(backend="postgres", postgres_dsn=dsn))
    await store.open()
    try:
        broken = []
        for p in range(partitions):
            status = await store.verify_chain(p)
            if not status.ok:
                broken.append(f"partition {p}: {status}")
        return broken
    finally:
        await store.close()


async def soak(admin_dsn: str, minutes: float, round_s: float, workers: int) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    async with Stack(admin_dsn) as stack:
        end = time.monotonic() + minutes * 60
        n = 0
        while time.monotonic() < end:
            n += 1
            seconds = min(round_s, max(1.0, end - time.monotonic()))
            args = loadgen._parse(
                stack.loadgen_argv(workers, seconds, "--seed", str(n), "--visible-timeout", "300")
            )
            summary = await loadgen.run(args)
            rss = {name: round(rss_mib(p.pid), 1) for name, p in stack.procs.items()}
            rounds.append(
                {
                    "round": n,
                    "accepted_events": summary["accepted_events"],
                    "accepted_events_per_s": summary["accepted_events_per_s"],
                    "p99_ms": summary["latency_ms"]["p99"],
                    "persisted_events_per_s": summary["persisted_events_per_s"],
                    "statuses": summary["statuses"],
                    "ok": summary["ok"],
                    "rss_mib": rss,
                }
            )
            print(rounds[-1], flush=True)
        broken = await _verify(stack.dsn, stack.partitions)
        peaks = stack.peaks()
    first, last = rounds[0]["rss_mib"], rounds[-1]["rss_mib"]
    return {
        "minutes": minutes,
        "rounds": rounds,
        "events_accepted": sum(r["accepted_events"] for r in rounds),
        "all_rounds_ok": all(r["ok"] for r in rounds),
        "statuses_other_than_202": sorted({s for r in rounds for s in r["statuses"] if s != "202"}),
        "rss_growth_first_to_last_round_mib": {
            k: round(last[k] - first[k], 1) for k in first if k in last
        },
        "peak_rss_mib": peaks,
        "chains_broken": broken,
    }


def _markdown(result: dict[str, Any], command: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "",
        f"### Soak ({result['minutes']:g} min, `{command}`, {when})",
        "",
        "| round | accepted ev/s | p99 ms | persisted ev/s | ok "
        "| RSS MiB (ingest / consumer / redis) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rounds"]:
        rss = r["rss_mib"]
        lines.append(
            f"| {r['round']} | {r['accepted_events_per_s']:,.0f} | {r['p99_ms']} | "
            f"{r['persisted_events_per_s']:,.0f} | {r['ok']} | "
            f"{rss.get('ingest')} / {rss.get('consumer')} / {rss.get('redis')} |"
        )
    lines += [
        "",
        f"{result['events_accepted']:,} events accepted; every round stored exactly the "
        f"accepted unique events: {result['all_rounds_ok']}; non-202 statuses: "
        f"{result['statuses_other_than_202'] or 'none'}; hash chains broken: "
        f"{result['chains_broken'] or 'none'}; RSS growth first→last round (MiB): "
        f"{result['rss_growth_first_to_last_round_mib']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--round", type=float, default=45.0, help="seconds of load per round")
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args(argv)
    result = asyncio.run(soak(args.admin_dsn, args.minutes, args.round, args.workers))
    command = f"python -m bench.soak --minutes {args.minutes:g} --round {args.round:g}"
    text = _markdown(result, command)
    print(text)
    ok = result["all_rounds_ok"] and not result["chains_broken"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
