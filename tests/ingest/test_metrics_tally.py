"""The ingest's metric tallies expose exactly what prometheus-client's own observe/inc would.

Two registries get the same observations, one through ``Histogram.observe``/``Counter.inc``,
the other through :class:`ingest.metrics.HistogramTally`/:class:`CounterTally`; every
collect (``generate_latest``, ``registry.collect()``) must show the same samples, values
included, with observations made between collects added at the next one.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingest.metrics import IngestMetrics

_values = st.one_of(
    st.integers(0, 2**40),
    st.floats(0, 1e9, allow_nan=False),
    st.sampled_from([0, 1, 5, 10, 20, 256, 1024, 0.001, 0.0025, 30, 31, 1e12]),
)


def _samples(metrics: IngestMetrics) -> list[tuple[str, tuple[tuple[str, str], ...], Any]]:
    text = generate_latest(metrics.registry).decode()
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            value = pytest.approx(s.value) if s.name.endswith("_sum") else s.value
            out.append((s.name, tuple(sorted(s.labels.items())), value))
    return sorted(out, key=lambda x: (x[0], x[1]))


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(_values, max_size=20), min_size=1, max_size=4))
def test_tallies_expose_what_direct_observations_do(batches: list[list[float]]) -> None:
    direct, tallied = IngestMetrics(), IngestMetrics()
    route = "/v1/events/ingest"
    latency = tallied.histogram_tally(tallied.latency.labels(route))
    requests = tallied.counter_tally(tallied.requests.labels(route, "202"))
    direct_latency, direct_requests = (
        direct.latency.labels(route),
        direct.requests.labels(route, "202"),
    )
    for batch in batches:
        for value in batch:
            direct.bundle_bytes.observe(value)
            direct.bundle_events.observe(value)
            direct.bundle_entries.observe(value)
            direct.pipeline_batch.observe(value)
            direct_latency.observe(value)
            direct_requests.inc()
            tallied.bundle_bytes_tally.observe(value)
            tallied.bundle_events_tally.observe(value)
            tallied.bundle_entries_tally.observe(value)
            tallied.pipeline_batch_tally.observe(value)
            latency.observe(value)
            requests.inc()
        # a collect between batches: what it added is not added twice
        assert _samples(tallied) == _samples(direct)


def test_collecting_the_registry_flushes_first() -> None:
    metrics = IngestMetrics()
    metrics.bundle_events_tally.observe(20)
    metrics.bundle_events_tally.observe(7)
    counts = {
        s.labels.get("le"): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "ingest_bundle_events_bucket"
    }
    assert counts["5.0"] == 0
    assert counts["10.0"] == 1
    assert counts["20.0"] == 2
    assert counts["+Inf"] == 2
