"""Filling a store for the read benchmarks: bundles written partition by partition.

Pipeline position: beside ``bench.query``, ``bench.query_load`` and ``bench.query_topology``,
which seed their stores through ``EventStore.write_batch`` (the consumers' own write path)
before they time any read. Each writes its own shape of attempts or topology runs first and
then tops the log up to the size asked for with bootstrap bursts, which is what this module
does for all three.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from storage.base import EventStore
from storage.envelope import Envelope
from storage.queue import StreamLayout
from tests.factories import bootstrap_burst, envelope

BATCH = 200  # envelopes per write_batch while seeding


async def write_grouped(
    store: EventStore, layout: StreamLayout, raws: Iterable[dict[str, Any]]
) -> int:
    """Write ``raws`` (wire bundles) in batches of :data:`BATCH` per partition, entry ids
    ``1-0``, ``2-0``, … in order; the events written."""
    by_part: dict[int, list[Envelope]] = defaultdict(list)
    written = 0
    for n, raw in enumerate(raws, start=1):
        part = layout.partition_of(raw["bundle_id"])
        by_part[part].append(envelope(raw, entry_id=f"{n}-0"))
        if len(by_part[part]) == BATCH:
            written += (await store.write_batch(part, by_part.pop(part))).written
    for part, envs in by_part.items():
        written += (await store.write_batch(part, envs)).written
    return written


async def fill_with_bursts(
    store: EventStore,
    layout: StreamLayout,
    written: int,
    events: int,
    started: float,
    *,
    exact: bool = True,
    report_every: int = 200,
) -> int:
    """Bootstrap bursts (one bundle each) until the log holds ``events``; ``exact`` sizes the
    last burst to land on it, else every burst has 998 events. Returns the events written."""
    burst = 0
    while written < events:
        size = min(998, max(1, events - written - 2)) if exact else 998
        raw = bootstrap_burst(size, target=f"bulk-{burst}")
        part = layout.partition_of(raw["bundle_id"])
        written += (await store.write_batch(part, [envelope(raw, entry_id=f"0-{burst}")])).written
        burst += 1
        if burst % report_every == 0:
            took = time.perf_counter() - started
            print(f"  seeded {written:,} events ({took:.0f}s)", flush=True)
    return written
