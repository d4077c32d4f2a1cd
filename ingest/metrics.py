"""Prometheus metrics of one ingest app (docs/operations.md), on its own CollectorRegistry.

Pipeline position: the request middleware, the ingest handler, the publisher and the lag
gauge record here; ``GET /metrics`` renders it. A registry per app (never the global one)
lets tests build many apps in one process.

The per-request observations (request count, latency, bundle bytes/events/entries, XADDs
per pipeline) go into lock-free tallies (:mod:`webcore.tallies`) that the registry adds
into prometheus-client's own values when it is collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.backpressure import QueueState
from webcore.tallies import CounterTally, HistogramTally, Tallies


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self._tallies = Tallies(r)
        self.requests = Counter(
            "ingest_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ingest_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bundle_bytes = Histogram(
            "ingest_bundle_bytes",
            "Accepted bundle size after decompression",
            registry=r,
            buckets=(
                256,
                1024,
                4096,
                16384,
                65536,
                262144,
                1048576,
                4194304,
                16777216,
                67108864,
            ),
        )
        self.bundle_events = Histogram(
            "ingest_bundle_events",
            "Events per accepted bundle",
            registry=r,
            buckets=(1, 5, 10, 20, 50, 100, 500, 1000, 5000, 10000, 50000, 100000),
        )
        self.rejections = Counter(
            "ingest_rejections_total",
            "Rejected ingest requests by reason",
            ["reason"],
            registry=r,
        )
        self.pipeline_batch = Histogram(
            "ingest_xadd_pipeline_batch",
            "XADDs per group-commit pipeline",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.queue_lag = Gauge(
            "ingest_queue_lag", "Last measured writers-group lag (all partitions)", registry=r
        )
        self.redis_memory = Gauge(
            "ingest_redis_used_memory_bytes", "Last measured Redis used_memory", registry=r
        )
        self.inflight_bytes = Gauge(
            "ingest_inflight_bytes",
            "Bytes of the in-flight memory budget held by requests being read and parsed",
            registry=r,
        )
        self.bundle_entries = Histogram(
            "ingest_bundle_entries",
            "Stream entries per accepted bundle (more than 1: split into chunks)",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )

        self.bundle_bytes_tally = self.histogram_tally(self.bundle_bytes)
        self.bundle_events_tally = self.histogram_tally(self.bundle_events)
        self.bundle_entries_tally = self.histogram_tally(self.bundle_entries)
        self.pipeline_batch_tally = self.histogram_tally(self.pipeline_batch)

    def histogram_tally(self, histogram: Histogram) -> HistogramTally:
        """A tally of ``histogram`` (or one labelled child), flushed at every collect."""
        return self._tallies.histogram(histogram)

    def counter_tally(self, counter: Counter) -> CounterTally:
        """A tally of ``counter`` (or one labelled child), flushed at every collect."""
        return self._tallies.counter(counter)

    def record_queue(self, state: QueueState) -> None:
        self.queue_lag.set(state.lag)
        self.redis_memory.set(state.used_memory)
