"""The consumer's log gauges: size and oldest retained event per partition, from storage."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from consumer.metrics import ConsumerMetrics
from storage.config import StorageSettings, create_store
from storage.ndjson import log
from storage.retention import cut_of_days
from tests.factories import attempt_lifecycle, envelope

OLD, NEW = 1_700_000_000.0, 1_800_000_000.0


async def test_log_gauges_follow_retention(tmp_path: Path) -> None:
    store = create_store(StorageSettings(backend="ndjson", ndjson_dir=tmp_path), writer=True)
    await store.open()
    try:
        await store.write_batch(0, [envelope(attempt_lifecycle("att-a", "t"), "1-0", OLD)])
        await store.write_batch(0, [envelope(attempt_lifecycle("att-b", "t"), "2-0", NEW)])
        metrics = ConsumerMetrics()
        metrics.record_log(await store.log_stats())
        text = generate_latest(metrics.registry).decode()
        assert 'leviathan_log_events{partition="0"} 10.0' in text
        assert 'leviathan_log_oldest_event_timestamp_seconds{partition="0"} 1.7e+09' in text
        size = sum(p.stat().st_size for _, p in log.segments(tmp_path, 0))
        assert f'leviathan_log_bytes{{partition="0"}} {float(size)}' in text

        # LEVIATHAN_RETENTION_DAYS as the maintenance applies it: the cut is days before now
        removed = await store.retain(cut_of_days(365 * 2, now=NEW))
        assert sum(r.removed for r in removed) == 5
        metrics.record_log(await store.log_stats())
        text = generate_latest(metrics.registry).decode()
        assert 'leviathan_log_events{partition="0"} 5.0' in text
        assert 'leviathan_log_oldest_event_timestamp_seconds{partition="0"} 1.8e+09' in text
    finally:
        await store.close()
