"""Chain check cost: a full walk vs an incremental check after a verified prefix.

Pipeline position: measures :meth:`storage.ndjson.store.NdjsonStore.verify_chain` — what
``GET /v1/events/verify`` (the console's chain panel) and ``leviathan-cp verify`` run. Run
``python -m bench.verify [--events N] [--new M] [--rounds R]``: it fills one NDJSON
partition to N events, then, R times, appends M events and times (a) a full walk and (b) a
check resuming after the prefix verified before the append, alternating which goes first,
and prints each pair and the median of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.storage_ndjson import batch, fill
from storage.chain import ChainPoint
from storage.ndjson.store import NdjsonStore


async def timed_check(store: NdjsonStore, after: ChainPoint | None) -> tuple[float, int]:
    started = time.perf_counter()
    status = await store.verify_chain(0, after=after)
    assert status.ok, status
    return time.perf_counter() - started, status.checked


async def main(events: int, new: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        store = NdjsonStore(Path(tmp))
        await store.open()
        try:
            await fill(store, events)
            first = await store.verify_chain(0)
            point = ChainPoint(first.checked, first.last_hash)
            full_s: list[float] = []
            incremental_s: list[float] = []
            for n in range(rounds):
                await store.write_batch(0, [batch(f"new{n}", new)])
                order = [None, point] if n % 2 == 0 else [point, None]
                for after in order:
                    seconds, checked = await timed_check(store, after)
                    (full_s if after is None else incremental_s).append(seconds)
                full = await store.verify_chain(0)
                point = ChainPoint(full.checked, full.last_hash)
                print(
                    f"round {n + 1}: {checked} events, full {full_s[-1] * 1e3:.1f} ms, "
                    f"incremental ({new} new) {incremental_s[-1] * 1e3:.2f} ms"
                )
            full_m, inc_m = statistics.median(full_s), statistics.median(incremental_s)
            print(
                f"median: full {full_m * 1e3:.1f} ms, incremental {inc_m * 1e3:.2f} ms "
                f"({full_m / inc_m:.0f}x less time)"
            )
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--new", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.new, args.rounds))
