"""Prometheus metrics of one query-tier app, on its own CollectorRegistry.

Pipeline position: the error middleware (:mod:`webcore.middlewares`) records every read
request's status and latency here; ``GET /metrics`` of the query process renders it. The
families mirror the ingest tier's request metrics under their own prefix, so a dashboard
shows reads and writes side by side; a registry per app lets tests build many apps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webcore.tallies import CounterTally, HistogramTally, Tallies


@dataclass
class QueryMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self._tallies = Tallies(r)
        self.requests = Counter(
            "query_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "query_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.rejections = Counter(
            "query_rejections_total", "Rejected read requests by reason", ["reason"], registry=r
        )
        self.storage_open = Gauge(
            "query_storage_open", "1 while the read store is open, 0 until it opens", registry=r
        )

    def histogram_tally(self, histogram: Histogram) -> HistogramTally:
        return self._tallies.histogram(histogram)

    def counter_tally(self, counter: Counter) -> CounterTally:
        return self._tallies.counter(counter)
