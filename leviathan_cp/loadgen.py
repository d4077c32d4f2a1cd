"""``leviathan-cp bench``: a load generator for a running ingest tier.

Pipeline position: a client in front of ``POST /v1/events/ingest``. N simulated workers post
realistic bundles (:mod:`leviathan_cp.loadgen_bundles`), a progress line is refreshed about
once a second. At the end it times persistence by polling ``GET /v1/stats`` until the
consumer group has no lag and nothing pending (an entry is acked only after its commit), then
pages ``GET /v1/events?target=<run target>`` until every accepted event is visible and checks
the stored count equals the accepted unique count (exit 1 otherwise). The run uses its own
target, ``bench-<UTC time>-<id>``, so earlier data never skews the count and the load is
told apart from real data. The event log is append-only (hash-chained), so that load stays
in the store it was posted to; the closing line says so and how to keep it apart (run
bench against a ``dev`` started in a folder of its own, then delete that folder).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from leviathan_cp import devstate
from leviathan_cp.loadgen_bundles import BundleMaker


@dataclass
class Tally:
    """Everything the workers observed; shared by all of them (one event loop, no locks)."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    accepted_ids: set[str] = field(default_factory=set)
    accepted_events: int = 0
    bundles: int = 0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="leviathan-cp bench",
        description="Load generator for a running ingest tier: N workers post realistic "
        "bundles, then it checks that every accepted event was stored exactly once. The load "
        "is stored under a target of its own (bench-<UTC time>-<id>) and stays in that store: "
        "to keep it apart from your data, run it against a dev started in an empty folder.",
    )
    p.add_argument(
        "--url",
        help="ingest base URL (default: the leviathan-cp dev running in this folder, "
        "else http://127.0.0.1:8000)",
    )
    p.add_argument("--token", help="bearer token (default: env or ~/.leviathan file)")
    p.add_argument("--token-file", type=Path)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--bundles", type=int, help="stop after this many bodies instead")
    p.add_argument("--burst-size", type=int, default=2000, help="file.discovered per burst")
    p.add_argument("--dup-ratio", type=float, default=0.0, help="share of re-posted bodies")
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout")
    p.add_argument("--visible-timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, dest="json_path", help="write the summary here")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    args = p.parse_args(argv)
    if args.workers < 1 or not 0.0 <= args.dup_ratio < 1.0:
        p.error("--workers must be >= 1 and --dup-ratio in [0, 1)")
    if args.duration <= 0 or args.timeout <= 0 or args.visible_timeout < 0:
        p.error("--duration and --timeout must be > 0, --visible-timeout >= 0")
    if (args.bundles is not None and args.bundles < 1) or args.burst_size < 0:
        p.error("--bundles must be >= 1 and --burst-size >= 0")
    _dev_defaults(args)
    if args.json_path is not None and not args.json_path.parent.is_dir():
        # found out now, not after minutes of load
        p.error(f"--json: no directory {args.json_path.parent}")
    return args


def _dev_defaults(args: argparse.Namespace) -> None:
    """URL and token file of a ``leviathan-cp dev`` running in this folder, if not given."""
    state = devstate.read(devstate.default_base())
    if args.url is None:
        args.url = state.url if state is not None else "http://127.0.0.1:8000"
    if state is not None and not args.token and not args.token_file:
        args.token_file = Path(state.token_file)


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    env = os.environ.get("LEVIATHAN_CONTROL_PLANE_TOKEN")
    if env and not args.token_file:
        return env
    path = args.token_file or Path.home() / ".leviathan" / "control-plane-token"
    return path.read_text().strip()


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], use_gzip: bool, tally: Tally
) -> None:
    data = orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    if use_gzip:
        data = gzip.compress(data, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    started = time.perf_counter()
    try:
        async with session.post(url, data=data, headers=headers) as resp:
            await resp.read()
            status = str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        status = type(exc).__name__
    tally.latencies.append(time.perf_counter() - started)
    tally.statuses[status] += 1
    tally.bundles += 1
    if status in ("200", "202"):
        tally.accepted_events += len(body["events"])
        tally.accepted_ids.update(ev["event_id"] for ev in body["events"])


async def _worker(
    maker: BundleMaker,
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    stop: float,
    tally: Tally,
) -> None:
    url = f"{args.url.rstrip('/')}/v1/events/ingest"
    while time.monotonic() < stop and (args.bundles is None or tally.bundles < args.bundles):
        for body in maker.next(args.dup_ratio):
            await _post(session, url, body, args.gzip, tally)


async def _progress(tally: Tally, started: float, quiet: bool) -> None:
    while not quiet:
        await asyncio.sleep(1.0)
        rate = tally.accepted_events / max(time.monotonic() - started, 1e-9)
        codes = " ".join(f"{k}:{v}" for k, v in sorted(tally.statuses.items()))
        line = (
            f"\r{rate:10.0f} ev/s  p50 {tally.percentile(0.5) * 1e3:6.1f} ms  "
            f"p99 {tally.percentile(0.99) * 1e3:6.1f} ms  [{codes}]"
        )
        sys.stderr.write(line[:160])
        sys.stderr.flush()


async def _stored_ids(session: aiohttp.ClientSession, base: str, target: str) -> list[str]:
    """Every stored event id of the run's target, paging the export endpoint."""
    ids: list[str] = []
    after: str | None = None
    while True:
        params = {"target": target, "limit": "1000", **({"after": after} if after else {})}
        async with session.get(f"{base}/v1/events", params=params) as resp:
            resp.raise_for_status()
            page = orjson.loads(await resp.read())
        ids.extend(ev["event_id"] for ev in page["events"])
        # the cursor is never null (the tail carries one too): the end is a short page
        if len(page["events"]) < 1000 or not page.get("next_cursor"):
            return ids
        after = page["next_cursor"]


async def _wait_committed(
    session: aiohttp.ClientSession, base: str, limit_s: float
) -> float | None:
    """Seconds until the consumer group has no lag and nothing pending (every accepted entry
    acked, i.e. committed to storage), or ``None`` if ``/v1/stats`` cannot tell.

    This times persistence without paging the stored events; the exact stored-count check
    comes after, untimed.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            async with session.get(f"{base}/v1/stats") as resp:
                if resp.status == 404:
                    return None
                stats = orjson.loads(await resp.read()) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            stats = None
        if stats is not None:
            parts = stats.get("partitions", [])
            known = all(p.get("lag") is not None for p in parts)
            if known and stats.get("total_lag") == 0 and stats.get("total_pending") == 0:
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


async def _wait_visible(
    session: aiohttp.ClientSession, args: argparse.Namespace, target: str, expected: int
) -> tuple[list[str], float]:
    base = args.url.rstrip("/")
    started = time.monotonic()
    ids: list[str] = []
    while time.monotonic() - started < args.visible_timeout:
        try:
            ids = await _stored_ids(session, base, target)
        except (aiohttp.ClientError, TimeoutError):
            ids = []
        if len(set(ids)) >= expected:
            break
        await asyncio.sleep(0.5)
    return ids, time.monotonic() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    target = f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{run_id[:4]}"
    tally = Tally()
    headers = {"Authorization": f"Bearer {_token(args)}"}
    if not args.quiet:
        where = f"{args.url.rstrip('/')}/v1/events/ingest"
        print(f"bench: posting to {where} (target {target})", file=sys.stderr)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=args.workers + 2)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as s:
        started = time.monotonic()
        stop = started + (args.duration if args.bundles is None else 1e9)
        makers = [
            BundleMaker(run_id, i, args.burst_size, random.Random(args.seed * 1000 + i), target)
            for i in range(args.workers)
        ]
        progress = asyncio.create_task(_progress(tally, started, args.quiet))
        await asyncio.gather(*(_worker(m, s, args, stop, tally) for m in makers))
        elapsed = time.monotonic() - started
        progress.cancel()
        if not args.quiet:
            sys.stderr.write("\n")
        expected = len(tally.accepted_ids)
        base = args.url.rstrip("/")
        if expected:
            committed_after = await _wait_committed(s, base, args.visible_timeout)
            stored, visible_after = await _wait_visible(s, args, target, expected)
        else:  # nothing accepted (server unreachable, wrong token): nothing to wait for
            committed_after, stored, visible_after = None, [], 0.0
    # Persistence time: queue drained (acked = committed); without /v1/stats, the slower
    # "every event listed by /v1/events" time is the only bound there is.
    persist_after = visible_after if committed_after is None else committed_after
    stored_unique = len(set(stored))
    return {
        "target": target,
        "workers": args.workers,
        "bodies": tally.bundles,
        "statuses": dict(tally.statuses),
        "accepted_events": tally.accepted_events,
        "accepted_unique": expected,
        "accepted_events_per_s": round(tally.accepted_events / max(elapsed, 1e-9), 1),
        "latency_ms": {
            q: round(tally.percentile(v) * 1e3, 2)
            for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "load_seconds": round(elapsed, 3),
        "committed_after_s": None if committed_after is None else round(committed_after, 3),
        "visible_after_s": round(visible_after, 3),
        "end_to_end_s": round(elapsed + persist_after, 3),
        "persisted_events_per_s": round(len(set(stored)) / max(elapsed + persist_after, 1e-9), 1),
        "stored": len(stored),
        "stored_unique": stored_unique,
        # a run that got nothing accepted proved nothing: not OK either
        "ok": expected > 0 and len(stored) == stored_unique == expected,
    }


def _text(summary: dict[str, Any]) -> str:
    lat = summary["latency_ms"]
    verdict = "OK" if summary["ok"] else "MISMATCH"
    if not summary["accepted_unique"]:
        verdict = "NOTHING ACCEPTED (see statuses)"
    return (
        f"bodies {summary['bodies']}  statuses {summary['statuses']}\n"
        f"accepted {summary['accepted_events']} events ({summary['accepted_unique']} unique), "
        f"{summary['accepted_events_per_s']:.0f} events/s over {summary['load_seconds']} s\n"
        f"latency p50 {lat['p50']} ms  p90 {lat['p90']} ms  p99 {lat['p99']} ms  "
        f"max {lat['max']} ms\n"
        f"queue drained (all committed) {summary['committed_after_s']} s after the last post, "
        f"end-to-end {summary['end_to_end_s']} s, "
        f"{summary['persisted_events_per_s']:.0f} events/s persisted\n"
        f"stored {summary['stored']} ({summary['stored_unique']} unique) vs accepted unique "
        f"{summary['accepted_unique']}: {verdict}\n"
        f"the load stays in that store under target {summary['target']} (the event log is "
        "append-only); to keep bench load apart from your data, run it against a dev started "
        "in an empty folder (cd $(mktemp -d) && leviathan-cp dev) and delete that folder after"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        summary = asyncio.run(run(args))
    except OSError as exc:
        print(f"leviathan-cp bench: {exc}", file=sys.stderr)
        return 2
    print(_text(summary))
    if args.json_path:
        try:
            args.json_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            print(
                f"leviathan-cp bench: cannot write {args.json_path}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
