"""Append rate of the NDJSON backend at an empty log vs at a large log (DESIGN §4: O(1)).

Pipeline position: measures :meth:`storage.ndjson.NdjsonStore.write_batch`, the consumer's
per-batch write, in isolation (no Redis). Run ``python -m bench.storage_ndjson
[--events N]``: it times 500-event batches on an empty log, fills the log to N events with
large batches, times the same batches again and prints both rates and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from storage.envelope import Envelope
from storage.ndjson import NdjsonStore
from storage.schema import Bundle, WireEvent

BASE = 1_764_320_000.0


def batch(tag: str, size: int) -> Envelope:
    """One bundle of ``size`` small events with unique ids, like a bootstrap burst."""
    events = [
        WireEvent.model_validate(
            {
                "event_id": f"{tag}-{i}",
                "event_type": "file.discovered",
                "timestamp": "2026-11-28T09:00:00Z",
                "payload": {"target_id": "bench", "path": f"src/{tag}/m{i}.py", "size": i},
            }
        )
        for i in range(size)
    ]
    bundle = Bundle(target="bench", bundle_id=f"b-{tag}", events=events)
    return Envelope(bundle=bundle, received_at=BASE, token_label="bench")


async def rate(store: NdjsonStore, tag: str, batches: int, size: int) -> float:
    envs = [batch(f"{tag}{n}", size) for n in range(batches)]
    start = time.perf_counter()
    for env in envs:
        result = await store.write_batch(0, [env])
        assert result.written == size, result
    return batches * size / (time.perf_counter() - start)


async def fill(store: NdjsonStore, events: int, size: int = 10_000) -> None:
    done, n = await store.count_events(), 0
    while done < events:
        chunk = min(size, events - done)
        await store.write_batch(0, [batch(f"fill{n}", chunk)])
        done, n = done + chunk, n + 1


def disk_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.iterdir()) / 1e6


async def main(events: int, batches: int, size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ndjson-") as tmp:
        store = NdjsonStore(Path(tmp))
        await store.open()
        try:
            empty = await rate(store, "empty", batches, size)
            started = time.perf_counter()
            await fill(store, events)
            fill_s = time.perf_counter() - started
            total = await store.count_events()
            large = await rate(store, "large", batches, size)
            log_mb = disk_mb(Path(tmp))
        finally:
            await store.close()
    print(f"batch size            : {size} events, {batches} batches timed per phase")
    print(f"fill                  : {total:,} events in {fill_s:.1f}s, {log_mb:.0f} MB on disk")
    print(f"rate at empty log     : {empty:,.0f} events/s")
    print(f"rate at {total:,} events: {large:,.0f} events/s")
    print(f"ratio large/empty     : {large / empty:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="size of the large log")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per phase")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batches, args.batch_size))
