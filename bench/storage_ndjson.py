"""Append rate of the NDJSON backend at an empty log vs at a large log (appends must stay O(1)).

Pipeline position: measures :meth:`storage.ndjson.store.NdjsonStore.write_batch`, the consumer's
per-batch write, in isolation (no Redis). Run ``python -m bench.storage_ndjson
[--events N] [--windows W]``: it fills one log to N events with large batches, then times
windows of 500-event batches alternately on that log and on a second, small one (empty at
the start, W x 10,000 events at the end) and prints the median rate of each and their
ratio: one window is a fraction of a second, so on a shared machine a single pair of
windows swings by a third either way.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from storage.envelope import Envelope
from storage.ndjson.store import NdjsonStore
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


async def main(events: int, batches: int, size: int, windows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ndjson-") as tmp:
        small = NdjsonStore(Path(tmp) / "small")
        large = NdjsonStore(Path(tmp) / "large")
        await small.open()
        await large.open()
        try:
            started = time.perf_counter()
            await fill(large, events)
            fill_s = time.perf_counter() - started
            total = await large.count_events()
            log_mb = disk_mb(Path(tmp) / "large")
            # Windows alternate between the two logs (and which goes first), so the host's
            # speed changing during the run weighs on both alike.
            rates: dict[str, list[float]] = {"small": [], "large": []}
            for w in range(windows):
                order = [("small", small), ("large", large)]
                for name, store in order if w % 2 == 0 else order[::-1]:
                    rates[name].append(await rate(store, f"{name}{w}-", batches, size))
            small_events = await small.count_events()
        finally:
            await small.close()
            await large.close()
    low, high = statistics.median(rates["small"]), statistics.median(rates["large"])
    print(f"batch size            : {size} events, {windows} windows of {batches} batches per log")
    print(f"fill                  : {total:,} events in {fill_s:.1f}s, {log_mb:.0f} MB on disk")
    print(f"small log (0-{small_events:,} events): {low:,.0f} events/s (median of windows)")
    print(f"large log ({total:,}+ events): {high:,.0f} events/s (median of windows)")
    pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(rates["small"], rates["large"], strict=True))
    print(f"ratio large/small     : {high / low:.2f} (per window: {pairs}; flat = within 0.8-1.2)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="size of the large log")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per phase")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--windows", type=int, default=9, help="timed windows per log")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batches, args.batch_size, args.windows))
