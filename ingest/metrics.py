"""Prometheus metrics of one ingest app (docs/operations.md), on its own CollectorRegistry.

Pipeline position: the request middleware, the ingest handler, the publisher and the lag
gauge record here; ``GET /metrics`` renders it. A registry per app (never the global one)
lets tests build many apps in one process.

The per-request observations (request count, latency, bundle bytes/events/entries, XADDs
per pipeline) go into :class:`HistogramTally`/:class:`CounterTally`: plain integers in the
event loop's thread, no lock, ~0.2 µs instead of ~0.8 µs per histogram ``observe``. A
collector registered ahead of every metric adds them into prometheus-client's own values
whenever the registry is collected (``/metrics``), so the exposition — families, names,
labels, buckets, counts — is the library's, exactly as if each had been observed directly.
Tallies are not thread-safe: record only from the event loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from ingest.backpressure import QueueState


class HistogramTally:
    """Observations of one (unlabelled or labelled) histogram, held until a collect."""

    __slots__ = ("_bounds", "_counts", "_histogram", "_sum")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        # prometheus-client's own bounds (+Inf last): Histogram.observe counts a value in
        # the first bucket whose bound is >= it, which is what bisect_left finds
        self._bounds: list[float] = list(histogram._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts, buckets = self._counts, self._histogram._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
                counts[i] = 0
        if self._sum:
            self._histogram._sum.inc(self._sum)
            self._sum = 0.0


class CounterTally:
    """Increments of one counter (child), held until a collect."""

    __slots__ = ("_counter", "_n")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._n = 0

    def inc(self) -> None:
        self._n += 1

    def flush(self) -> None:
        if self._n:
            self._counter.inc(self._n)
            self._n = 0


class _FlushFirst:
    """A collector with no metrics of its own, registered before the others: collecting
    the registry first adds every tally into the values collected next."""

    def __init__(self) -> None:
        self.tallies: list[HistogramTally | CounterTally] = []

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        for tally in self.tallies:
            tally.flush()
        return []


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self._flush = _FlushFirst()
        r.register(self._flush)
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
        tally = HistogramTally(histogram)
        self._flush.tallies.append(tally)
        return tally

    def counter_tally(self, counter: Counter) -> CounterTally:
        """A tally of ``counter`` (or one labelled child), flushed at every collect."""
        tally = CounterTally(counter)
        self._flush.tallies.append(tally)
        return tally

    def record_queue(self, state: QueueState) -> None:
        self.queue_lag.set(state.lag)
        self.redis_memory.set(state.used_memory)
