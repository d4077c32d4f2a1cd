"""Prometheus metrics of the Spider forwarder.

Pipeline position: recorded by consumer.forwarder. Inside the consumer process they are
registered in the consumer's registry (so its /metrics shows them); ``leviathan-cp
forward`` gives them a registry of their own, served by consumer.forwarder.health.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SKIP_REASONS = ("backlog", "trimmed")


class SpiderMetrics:
    """Lag, outcome counters and POST latency of the forwarder."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        self.lag = Gauge(
            "leviathan_spider_lag",
            "Bundles not yet forwarded to Spider (undelivered plus in flight) per partition",
            ["partition"],
            registry=r,
        )
        self.forwarded = Counter(
            "leviathan_spider_forwarded", "Bundles Spider accepted (2xx)", registry=r
        )
        self.failed = Counter(
            "leviathan_spider_failed",
            "POSTs to Spider that will be retried (connection, timeout, 5xx, 429, ...)",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "leviathan_spider_skipped",
            "Bundles never sent to Spider, by reason: backlog (the oldest given up beyond "
            "LEVIATHAN_SPIDER_MAX_BACKLOG), trimmed (trimmed from the stream before the "
            "forwarder read them, or while they were pending)",
            ["reason"],
            registry=r,
        )
        for reason in SKIP_REASONS:  # both series exist from the start, at 0
            self.skipped.labels(reason)
        self.dead_lettered = Counter(
            "leviathan_spider_dead_lettered",
            "Bundles Spider refused (4xx), moved to the partition's spider-dead stream",
            registry=r,
        )
        self.up = Gauge(
            "leviathan_spider_up", "1 when the last POST got an answer from Spider", registry=r
        )
        self.post_seconds = Histogram(
            "leviathan_spider_post_seconds",
            "Duration of one POST to Spider, answered or not",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
