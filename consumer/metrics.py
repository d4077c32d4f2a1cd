"""Prometheus metrics of one consumer process (served on /metrics by consumer.health).

Pipeline position: the reader, dead-letter mover and maintenance jobs record here; the
per-partition progress gauges are set from the reader's state when /metrics is rendered. Each
instance owns its own CollectorRegistry so several consumers in one test process do not
collide on the global default registry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from consumer.progress import PartitionState
from storage.base import LogStat


class ConsumerMetrics:
    """The consumer's counters, histograms and gauges in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_written = Counter(
            "leviathan_consumer_events_written", "Events newly stored", registry=r
        )
        self.duplicates = Counter(
            "leviathan_consumer_duplicates", "Events dropped as identical re-deliveries", registry=r
        )
        self.revisions = Counter(
            "leviathan_consumer_revisions",
            "Events stored as a new revision of a known event_id (reused id, new content)",
            registry=r,
        )
        self.batch_size = Histogram(
            "leviathan_consumer_batch_entries",
            "Stream entries per write_batch",
            buckets=(1, 5, 10, 25, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "leviathan_consumer_batch_seconds", "write_batch plus XACK duration", registry=r
        )
        # the retained log of each partition (storage.base.LogStat), set by the log_stats job
        self.log_events = Gauge(
            "leviathan_log_events",
            "Events stored in each partition's log (since its retention checkpoint)",
            ["partition"],
            registry=r,
        )
        self.log_bytes = Gauge(
            "leviathan_log_bytes",
            "Bytes of each partition's log files on disk (NDJSON backend only)",
            ["partition"],
            registry=r,
        )
        self.log_oldest = Gauge(
            "leviathan_log_oldest_event_timestamp_seconds",
            "Arrival time (epoch) of the oldest event retained in each partition",
            ["partition"],
            registry=r,
        )
        self.retention_removed = Counter(
            "leviathan_retention_removed_events",
            "Events removed by retention (LEVIATHAN_RETENTION_DAYS) in this process",
            registry=r,
        )
        self.dead_lettered = Counter(
            "leviathan_consumer_dead_lettered",
            "Entries moved to the dead stream",
            ["reason"],
            registry=r,
        )
        self.reclaimed = Counter(
            "leviathan_consumer_reclaimed", "Entries taken over with XAUTOCLAIM/XCLAIM", registry=r
        )
        self.storage_errors = Counter(
            "leviathan_consumer_storage_errors",
            "Batch attempts that failed transiently (storage or Redis unavailable; retried)",
            registry=r,
        )
        self.storage_available = Gauge(
            "leviathan_consumer_storage_available",
            "1 while the last batch attempt reached storage and Redis, 0 while retrying",
            registry=r,
        )
        self.storage_available.set(1)
        self.partition_stalled = Gauge(
            "leviathan_consumer_partition_stalled",
            "1 while the partition holds entries with no commit for LEVIATHAN_CONSUMER_STALL_S",
            ["partition"],
            registry=r,
        )
        self.progress_age = Gauge(
            "leviathan_consumer_partition_progress_age_seconds",
            "Seconds since the partition last committed while it holds entries (0 when idle)",
            ["partition"],
            registry=r,
        )
        self.lag = Gauge(
            "leviathan_consumer_lag",
            "Group lag (undelivered entries) per partition",
            ["partition"],
            registry=r,
        )
        self.pending = Gauge(
            "leviathan_consumer_pending",
            "Delivered but unacked entries per partition",
            ["partition"],
            registry=r,
        )
        self.end_to_end = Histogram(
            "leviathan_consumer_end_to_end_seconds",
            "From envelope received_at (ingest) to commit announced",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )

    def update_progress(self, states: Sequence[PartitionState], stall_s: float) -> list[int]:
        """Set the per-partition progress gauges; returns the partitions stalled now."""
        now = time.monotonic()
        stalled = []
        for state in states:
            label = str(state.partition)
            age = state.stalled_for(now)
            self.progress_age.labels(label).set(round(age, 3))
            self.partition_stalled.labels(label).set(1 if age >= stall_s else 0)
            if age >= stall_s:
                stalled.append(state.partition)
        return stalled

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def record_log(self, stats: Sequence[LogStat]) -> None:
        """Set the log gauges from :meth:`storage.base.EventStore.log_stats`."""
        for stat in stats:
            label = str(stat.partition)
            self.log_events.labels(label).set(stat.events)
            if stat.bytes is not None:
                self.log_bytes.labels(label).set(stat.bytes)
            if stat.oldest_received_at is not None:
                self.log_oldest.labels(label).set(stat.oldest_received_at)
