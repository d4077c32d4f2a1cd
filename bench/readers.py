"""Reads beside writes: ingest p99 under the load generator while readers poll the console.

Pipeline position: wraps the whole pipeline. ``python -m bench.readers [--seconds S]
[--workers W] [--readers R] [--interval I] [--rounds N]`` starts one private stack
(:mod:`bench.stack`: own Redis, a throwaway PostgreSQL database, the consumer) with three
HTTP processes on it: ``leviathan-cp ingest`` serving reads (the default), a second
``leviathan-cp ingest`` with ``LEVIATHAN_INGEST_SERVE_READS=false`` and ``leviathan-cp
query``. Each round runs the ``leviathan-cp bench`` load generator (:mod:`leviathan_cp.loadgen`,
W workers for S seconds) in three set-ups, in an order rotated from round to round:

- (a) no readers, load on the ingest that serves reads;
- (b) R readers polling that same ingest process;
- (c) R readers polling the query tier, load on the ingest that serves no reads.

A reader polls what the console polls (query/static/console.js: ``/v1/stats``,
``/v1/attempts?limit=50`` with ``/v1/failures?limit=200``, ``/v1/tasks?limit=1000``, then
``/v1/events/verify``) plus ``/v1/graph/summary`` and ``/v1/events/recent``, then waits
``--interval`` seconds (the console waits 2; 0 polls back to back). The readers run in a
process of their own (this module with ``--poll``), so their client work does not slow the
load generator's event loop. After each load the queue is drained (every accepted event
committed) before the next set-up starts, and the run's events are counted through the read
API: every accepted event stored exactly once. The figures are the medians over the rounds
of each set-up's ingest p99 and accepted events/s, and the ratios (b)/(a) and (c)/(a) of
the p99s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bench.stack import Stack
from leviathan_cp import loadgen

# one poll: these at once (as the console's panels), then the others one after the other
TOGETHER = ("/v1/stats", "/v1/attempts?limit=50", "/v1/failures?limit=200", "/v1/tasks?limit=1000")
AFTER = ("/v1/events/verify", "/v1/graph/summary", "/v1/events/recent")


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    readers_on: str  # "", "ingest" or "query"


SETUPS = (
    Setup("a", "no readers", ""),
    Setup("b", "readers on ingest", "ingest"),
    Setup("c", "readers on query tier", "query"),
)


# ---- the readers' process ----------------------------------------------------------------


async def _reader(
    session: aiohttp.ClientSession,
    base: str,
    interval: float,
    stop: asyncio.Event,
    seen: Counter[str],
    latencies: dict[str, list[float]],
) -> None:
    async def get(path: str) -> None:
        started = time.perf_counter()
        try:
            async with session.get(base + path) as resp:
                await resp.read()
                seen[str(resp.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            seen[type(exc).__name__] += 1
        latencies.setdefault(path, []).append(time.perf_counter() - started)

    while not stop.is_set():
        await asyncio.gather(*(get(p) for p in TOGETHER))
        for path in AFTER:
            await get(path)
        if interval > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def poll(
    base: str, token: str, readers: int, interval: float, stop: asyncio.Event
) -> dict[str, Any]:
    """``readers`` pollers on ``base`` until ``stop`` is set (each ends the poll it is in);
    requests, rate, statuses, p99 and each endpoint's p50."""
    seen: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=readers * 4)
    started = time.monotonic()
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as s:
        await asyncio.gather(
            *(_reader(s, base, interval, stop, seen, latencies) for _ in range(readers))
        )
    elapsed = time.monotonic() - started
    everything = [x for times in latencies.values() for x in times]
    return {
        "requests": len(everything),
        "per_s": round(len(everything) / max(elapsed, 1e-9), 1),
        # answered 200: a refused or failed read is no read (a wrong token would read nothing)
        "ok_per_s": round(seen["200"] / max(elapsed, 1e-9), 1),
        "statuses": dict(seen),
        "p99_ms": _ms(everything, 0.99),
        "p50_ms_by_path": {path: _ms(times, 0.5) for path, times in latencies.items()},
    }


def _ms(seconds: list[float], q: float) -> float | None:
    ordered = sorted(seconds)
    return round(ordered[int(q * (len(ordered) - 1))] * 1e3, 2) if ordered else None


async def _readers_process(base: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    """The readers until the measuring process closes our stdin, or ``--poll-limit`` passed
    (bounded even if that process died)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_stdin, daemon=True).start()
    loop.call_later(args.poll_limit, stop.set)
    return await poll(base, token, args.readers, args.interval, stop)


# ---- the measuring process ----------------------------------------------------------------


@dataclass
class Urls:
    ingest: str  # serves reads (the default)
    writes_only: str  # LEVIATHAN_INGEST_SERVE_READS=false
    query: str


def _start_readers(base: str, token: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.readers", "--poll", base]
    argv += ["--readers", str(args.readers), "--interval", str(args.interval)]
    argv += ["--poll-limit", str(args.seconds + 60)]
    env = {**os.environ, "LEVIATHAN_CONTROL_PLANE_TOKEN": token}
    return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _stop_readers(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=60)  # closes stdin: the readers stop
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError("the readers did not stop within 60 s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the readers exited with {proc.returncode}")
    result: dict[str, Any] = orjson.loads(out)
    return result


async def _verify(stack: Stack, read_url: str, summary: dict[str, Any]) -> int:
    """Wait until the queue is drained, then count the run's stored events through the read
    API: accepted events missing or stored twice."""
    expected = int(summary["accepted_unique"])
    argv = ["--url", read_url, "--token", stack.token, "--visible-timeout", "180"]
    args = loadgen._parse(argv)
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        if await loadgen._wait_committed(session, read_url, 180) is None:
            raise RuntimeError("the queue did not drain within 180 s")
        ids, _ = await loadgen._wait_visible(session, args, summary["target"], expected)
    return abs(expected - len(set(ids))) + len(ids) - len(set(ids))


async def one_run(
    stack: Stack, urls: Urls, setup: Setup, args: argparse.Namespace
) -> dict[str, Any]:
    write_url = urls.writes_only if setup.readers_on == "query" else urls.ingest
    readers = None
    if setup.readers_on:
        readers = _start_readers(getattr(urls, setup.readers_on), stack.token, args)
        await asyncio.sleep(1.0)  # the readers are polling before the first post
    try:
        # the load phase only: the drain and the stored-count check follow, through a read URL
        argv = stack.loadgen_argv(
            args.workers, args.seconds, "--visible-timeout", "0", url=write_url
        )
        summary = await loadgen.run(loadgen._parse(argv))
    finally:
        reads = await asyncio.to_thread(_stop_readers, readers) if readers else None
    bad = await _verify(stack, urls.ingest, summary)
    return {
        "setup": setup.key,
        "p99_ms": summary["latency_ms"]["p99"],
        "accepted_per_s": summary["accepted_events_per_s"],
        "statuses": summary["statuses"],
        "missing_or_doubled": bad,
        "reads": reads,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        stack = await Stack(args.admin_dsn).__aenter__()
    except RuntimeError as exc:
        return {"error": str(exc)}
    runs: list[dict[str, Any]] = []
    try:
        try:
            urls = Urls(
                stack.url,
                await stack.add_tier("writes-only", "ingest", LEVIATHAN_INGEST_SERVE_READS="false"),
                await stack.add_tier("query", "query"),
            )
            # something to read before the first measured round
            warm = stack.loadgen_argv(
                args.workers, min(args.seconds, 3.0), "--visible-timeout", "0"
            )
            if await _verify(stack, stack.url, await loadgen.run(loadgen._parse(warm))):
                raise RuntimeError("the warm-up load was not stored exactly once")
            for r in range(args.rounds):
                order = SETUPS[r % 3 :] + SETUPS[: r % 3]
                for setup in order:
                    runs.append(await one_run(stack, urls, setup, args))
                    print(
                        f"round {r + 1} {setup.key}: {orjson.dumps(runs[-1]).decode()}", flush=True
                    )
        except Exception as exc:
            names = ("ingest", "writes-only", "query", "consumer")
            logs = "\n".join(f"--- {n}\n{stack.log_tail(n)}" for n in names if n in stack.procs)
            return {"error": f"{type(exc).__name__}: {exc}", "logs": logs, "runs": runs}
        return {"runs": runs, "peak_rss_mib": stack.peaks()}
    finally:
        await stack.__aexit__(None, None, None)


def report(result: dict[str, Any]) -> list[str]:
    """The lines bench.run_all reads its figures from: medians over the rounds."""
    lines = []
    p99: dict[str, float] = {}
    for setup in SETUPS:
        mine = [r for r in result["runs"] if r["setup"] == setup.key]
        p99[setup.key] = statistics.median(r["p99_ms"] for r in mine)
        rate = statistics.median(r["accepted_per_s"] for r in mine)
        lines.append(f"({setup.key}) {setup.label}: ingest p99 {p99[setup.key]:.2f} ms")
        lines.append(f"({setup.key}) {setup.label}: accepted {rate:,.0f} events/s")
        if setup.readers_on:
            reads = statistics.median(r["reads"]["ok_per_s"] for r in mine)
            lines.append(f"({setup.key}) {setup.label}: reads answered 200 {reads:,.0f}/s")
    lines.append(f"ingest p99 (b)/(a): {p99['b'] / p99['a']:.2f}")
    lines.append(f"ingest p99 (c)/(a): {p99['c'] / p99['a']:.2f}")
    bad = sum(r["missing_or_doubled"] for r in result["runs"])
    lines.append(f"missing or doubled: {bad}")
    return lines


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--seconds", type=float, default=10.0, help="load duration of each run")
    p.add_argument("--workers", type=int, default=8, help="load generator workers")
    p.add_argument("--readers", type=int, default=16)
    p.add_argument("--interval", type=float, default=2.0, help="a reader's pause between polls")
    p.add_argument("--rounds", type=int, default=3, help="each round runs (a), (b) and (c)")
    p.add_argument("--poll", metavar="URL", help=argparse.SUPPRESS)  # the readers' process
    p.add_argument("--poll-limit", type=float, default=120.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.seconds <= 0 or args.workers < 1 or args.readers < 1 or args.rounds < 1:
        p.error("--seconds must be above 0, --workers, --readers and --rounds at least 1")
    if args.interval < 0:
        p.error("--interval must be 0 or more")
    if args.poll:
        token = os.environ["LEVIATHAN_CONTROL_PLANE_TOKEN"]
        result = asyncio.run(_readers_process(args.poll, token, args))
        print(orjson.dumps(result).decode())
        return 0
    result = asyncio.run(run(args))
    if "error" in result:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 1
    peaks = result["peak_rss_mib"].items()
    print("peak RSS MiB: " + " ".join(f"{name} {mib:.1f}" for name, mib in peaks))
    print("\n".join(report(result)))
    return 0 if all(r["missing_or_doubled"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(cli())
