"""The worker client's overhead: its post rate against ``leviathan-cp bench``'s, side by side.

Pipeline position: in front of the ingest tier. ``python -m bench.client [--rounds R]
[--seconds S]`` starts a private stack (:mod:`bench.stack`: own Redis, a throwaway
PostgreSQL database, the real ingest and consumer processes) and alternates, R times:

- ``leviathan-cp bench``'s poster (:func:`leviathan_cp.loadgen._post`: aiohttp + orjson, one
  worker, i.e. one request in flight) posting 20-event bundles for S seconds;
- :class:`leviathan_client.Client` fed the same kind of bundles from one thread for S seconds
  (its one sender thread: one request in flight), then ``flush``; its rate counts until the
  last answer;
- the same Client with a disk spool (every ``send`` fsync'd), for reference.

Prints each round, the medians, and ``client/bench = <ratio>``, the median of the per-round
ratios, which the registry reads (target ≥ 0.8): on a loaded host only the two sides of one
round compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import aiohttp
from leviathan_client import Client

from bench.stack import Stack
from leviathan_cp import loadgen

EVENTS = 20


def make_bundle(prefix: str, i: int) -> dict[str, Any]:
    attempt = f"{prefix}-a{i}"
    return {
        "target": "bench-client",
        "bundle_id": f"bundle-{attempt}",
        "events": [
            {
                "event_id": f"{attempt}-{k:02d}",
                "event_type": "attempt.started" if k == 0 else "log.line",
                "timestamp": f"2026-11-28T09:{k:02d}:00Z",
                "actor_id": f"worker-{prefix}",
                "payload": {"attempt_id": attempt, "task_id": f"task-{i % 7}", "line": k},
            }
            for k in range(EVENTS)
        ],
    }


async def bench_side(stack: Stack, prefix: str, seconds: float) -> float:
    """events/s of leviathan-cp bench's poster, one worker."""
    tally = loadgen.Tally()
    headers = {"Authorization": f"Bearer {stack.token}"}
    url = f"{stack.url}/v1/events/ingest"
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=3)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as s:
        started = time.monotonic()
        stop, i = started + seconds, 0
        while time.monotonic() < stop:
            await loadgen._post(s, url, make_bundle(prefix, i), False, tally)
            i += 1
        elapsed = time.monotonic() - started
    return tally.accepted_events / elapsed


def client_side(stack: Stack, prefix: str, seconds: float, spool: bool) -> float:
    """events/s of the Client from one thread, until every answer came."""
    with tempfile.TemporaryDirectory(prefix="bench-client-spool-") as folder:
        client = Client(stack.url, stack.token, spool_dir=folder if spool else None)
        started = time.monotonic()
        stop, i = started + seconds, 0
        while time.monotonic() < stop:
            client.send(make_bundle(prefix, i))
            i += 1
        if not client.flush(120):
            raise RuntimeError("the client did not get every answer within 120 s")
        elapsed = time.monotonic() - started
        client.close()
        if client.stats.rejected or client.stats.delivered != i:
            raise RuntimeError(f"client: {client.stats}")
    return client.stats.delivered * EVENTS / elapsed


async def drained(stack: Stack) -> None:
    """Wait for the consumer to commit the last side's bundles, so no side pays for the
    previous one's backlog."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        await loadgen._wait_committed(session, stack.url, 120)


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"bench": [], "client": [], "spool": []}
    async with Stack(args.admin_dsn) as stack:
        for r in range(args.rounds):
            rates["bench"].append(await bench_side(stack, f"b{r}", args.seconds))
            await drained(stack)
            rates["client"].append(
                await asyncio.to_thread(client_side, stack, f"c{r}", args.seconds, False)
            )
            await drained(stack)
            rates["spool"].append(
                await asyncio.to_thread(client_side, stack, f"s{r}", args.seconds, True)
            )
            await drained(stack)
            print(
                f"round {r + 1}: bench {rates['bench'][-1]:,.0f}  client "
                f"{rates['client'][-1]:,.0f}  client+spool {rates['spool'][-1]:,.0f} events/s",
                flush=True,
            )
    return rates


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="load per side and round")
    args = p.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        p.error("--rounds must be at least 1 and --seconds above 0")
    # the private stack's ingest needs no 503 grace period on SIGTERM: no load balancer
    os.environ.setdefault("LEVIATHAN_DRAIN_SECONDS", "0")
    rates = asyncio.run(run(args))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"leviathan-cp bench poster (1 worker): median {med['bench']:,.0f} events/s")
    print(f"client (1 thread): median {med['client']:,.0f} events/s")
    print(f"client with spool (1 thread): median {med['spool']:,.0f} events/s")
    # the median of the per-round ratios, as bench.ab does: the host's speed drifts between
    # rounds, so only the two sides of one round compare
    for side, label in (("client", "client"), ("spool", "client+spool")):
        ratios = [c / b for c, b in zip(rates[side], rates["bench"], strict=True)]
        each = " ".join(f"{r:.2f}" for r in ratios)
        print(f"{label}/bench = {statistics.median(ratios):.2f} (per round: {each})")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
