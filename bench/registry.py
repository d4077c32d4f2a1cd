"""Every benchmark ``python -m bench.run_all`` runs: its command, sizes, figures and targets.

Pipeline position: above every tier, beside :mod:`bench.run_all`. One :class:`Benchmark`
entry per script under ``bench/``: the module and arguments of a full run, smaller ones for
``--quick``, and the figures read from what it prints, each with its target (or none, for a
figure reported for reference). A new benchmark is one more entry in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Extract = Callable[[str], float | None]


def rx(pattern: str) -> Extract:
    """The first group of ``pattern`` (multiline) in the output, thousands commas allowed."""
    compiled = re.compile(pattern, re.MULTILINE)

    def extract(output: str) -> float | None:
        match = compiled.search(output)
        return None if match is None else float(match.group(1).replace(",", ""))

    return extract


def shortfall(pattern: str) -> Extract:
    """``expected - got`` from a pattern whose groups are (got, expected)."""
    compiled = re.compile(pattern, re.MULTILINE)

    def extract(output: str) -> float | None:
        match = compiled.search(output)
        return None if match is None else float(int(match.group(2)) - int(match.group(1)))

    return extract


ENDPOINT_ROW = re.compile(r"^(/v1/\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", re.MULTILINE)


def worst_p99(output: str) -> float | None:
    """The highest p99 of the endpoint table ``bench.query`` prints."""
    rows = ENDPOINT_ROW.findall(output)
    return max(float(r[2]) for r in rows) if rows else None


def worst_growth(output: str) -> float | None:
    """Topology: the largest p50 ratio, largest log size over smallest, of any endpoint."""
    sizes = re.split(r"^== \w+, [\d,]+ events in the log$", output, flags=re.MULTILINE)[1:]
    tables = [{r[0]: float(r[1]) for r in ENDPOINT_ROW.findall(part)} for part in sizes]
    if len(tables) < 2 or not tables[0] or tables[0].keys() != tables[-1].keys():
        return None
    return max(tables[-1][k] / tables[0][k] for k in tables[0])


def worst_p99_growth(output: str) -> float | None:
    """Query under load: the largest p99 ratio, largest log size over smallest."""
    sizes = re.split(r"^== \w+, [\d,]+ events in the log$", output, flags=re.MULTILINE)[1:]
    tables = [{r[0]: float(r[2]) for r in ENDPOINT_ROW.findall(part)} for part in sizes]
    if len(tables) < 2 or not tables[0] or tables[0].keys() != tables[-1].keys():
        return None
    return max(tables[-1][k] / tables[0][k] for k in tables[0])


@dataclass(frozen=True)
class Target:
    """``op`` is ">=", "<=" or "within" (``low <= value <= high``)."""

    op: str
    value: float
    high: float = 0.0

    def met(self, figure: float) -> bool:
        if self.op == ">=":
            return figure >= self.value
        if self.op == "<=":
            return figure <= self.value
        return self.value <= figure <= self.high

    def __str__(self) -> str:
        if self.op == "within":
            return f"{self.value:g} to {self.high:g}"
        return f"{self.op} {self.value:,g}"


@dataclass(frozen=True)
class Figure:
    label: str
    unit: str
    extract: Extract
    target: Target | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    module: str
    args: tuple[str, ...]
    quick: tuple[str, ...]
    figures: tuple[Figure, ...]

    def argv(self, quick: bool) -> list[str]:
        return [self.module, *(self.quick if quick else self.args)]


def _readers() -> Benchmark:
    figures: list[Figure] = []
    for key, label in (
        ("a", "no readers"),
        ("b", "readers on ingest"),
        ("c", "readers on query tier"),
    ):
        line = rf"^\({key}\) {label}: "
        figures.append(
            Figure(f"({key}) {label}: ingest p99", "ms", rx(line + r"ingest p99 ([\d.]+) ms"))
        )
        figures.append(
            Figure(
                f"({key}) {label}: accepted", "events/s", rx(line + r"accepted ([\d,]+) events/s")
            )
        )
        if key != "a":
            figures.append(
                Figure(
                    f"({key}) {label}: reads answered 200",
                    "/s",
                    rx(line + r"reads answered 200 ([\d,]+)/s"),
                )
            )
    figures += [
        Figure(
            "ingest p99, readers on ingest / no readers (b/a)",
            "",
            rx(r"^ingest p99 \(b\)/\(a\): ([\d.]+)"),
        ),
        # the read tier's promise: reads apart leave ingest's p99 as it is (10% for the noise)
        Figure(
            "ingest p99, readers on the query tier / no readers (c/a)",
            "",
            rx(r"^ingest p99 \(c\)/\(a\): ([\d.]+)"),
            Target("<=", 1.1),
        ),
        Figure(
            "accepted events missing or doubled in storage",
            "events",
            rx(r"^missing or doubled: (\d+)"),
            Target("<=", 0),
        ),
    ]
    return Benchmark(
        "readers",
        "Ingest p99 under leviathan-cp bench while 16 readers poll the console's endpoints: "
        "none, on ingest, on the query tier (PostgreSQL, own Redis)",
        "bench.readers",
        (),
        ("--seconds", "1", "--workers", "2", "--rounds", "1"),
        tuple(figures),
    )


def _topology(backend: str) -> Benchmark:
    return Benchmark(
        f"topology_{backend}",
        f"Topology reads at a small and a large log ({backend})",
        "bench.query",
        ("--topology", "--backend", backend, "--sizes", "1000,1000000", "--requests", "200"),
        ("--topology", "--backend", backend, "--sizes", "200,3000", "--requests", "20"),
        (
            Figure(
                "worst p50 growth, largest log over smallest (4 endpoints)",
                "x",
                worst_growth,
                Target("<=", 1.5),
            ),
        ),
    )


def _query_load(backend: str) -> Benchmark:
    return Benchmark(
        f"query_load_{backend}",
        f"Every read endpoint, 16 concurrent readers while a writer commits ({backend})",
        "bench.query",
        ("--load", "--backend", backend, "--sizes", "10000,1000000", "--attempts", "100000",
         "--requests", "60"),
        ("--load", "--backend", backend, "--sizes", "500,1000", "--attempts", "100",
         "--requests", "2"),
        (
            Figure("worst p99 of 12 endpoints", "ms", worst_p99, Target("<=", 50)),
            Figure("worst p99 growth, largest log over smallest", "x", worst_p99_growth,
                   Target("<=", 2.0)),
        ),
    )  # fmt: skip


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "ingest",
        "Ingest: real app vs validate-only vs one XADD per request (20-event bundles)",
        "bench.ingest",
        (),
        ("--rounds", "1", "--seconds", "1"),
        (
            Figure(
                "real / validate-only events/s (c/a)", "", rx(r"^c/a = ([\d.]+)"), Target(">=", 0.8)
            ),
            Figure(
                "real app p99 latency",
                "ms",
                rx(r"^\(c\) real\s+[\d.]+ events/s\s+p50\s+[\d.]+ ms\s+p99\s+([\d.]+) ms"),
                Target("<=", 15),
            ),
            Figure("naive one-XADD-per-request / validate-only (b/a)", "", rx(r"b/a = ([\d.]+)")),
        ),
    ),
    Benchmark(
        "consumer",
        "Consumer drain of a pre-filled stream (100,000 events, batch 200)",
        "bench.consumer",
        (),
        ("--bundles", "200", "--rounds", "1"),
        (
            Figure(
                "PostgreSQL", "events/s", rx(r"^postgres: +median ([\d,]+)"), Target(">=", 30_000)
            ),
            Figure("NDJSON", "events/s", rx(r"^ndjson: +median ([\d,]+)"), Target(">=", 50_000)),
        ),
    ),
    Benchmark(
        "consumer_e2e",
        "Ingest to commit through the real processes (NDJSON, ?wait=)",
        "bench.consumer_e2e",
        (),
        ("--burst", "100", "--seconds", "1"),
        (
            Figure("max sustained", "events/s", rx(r"e2e max sustained: ([\d,]+) events/s")),
            Figure(
                "p99 at half the max rate",
                "ms",
                rx(r"answered 200\): p50 [\d.]+ ms  p99 ([\d.]+) ms"),
                Target("<=", 250),
            ),
        ),
    ),
    Benchmark(
        "storage_ndjson",
        "NDJSON append rate at a 1,000,000-event log vs a small one",
        "bench.storage_ndjson",
        ("--events", "1000000"),
        ("--events", "20000", "--windows", "3", "--batches", "4"),
        (
            Figure(
                "large / small log rate",
                "",
                rx(r"^ratio large/small\s*: ([\d.]+)"),
                Target("within", 0.8, 1.2),
            ),
        ),
    ),
    Benchmark(
        "storage_postgres",
        "PostgreSQL write_batch vs raw COPY of the same rows",
        "bench.storage_postgres",
        (),
        ("--events", "2000", "--rounds", "1"),
        (Figure("write_batch / raw COPY", "%", rx(r"^ratio:\s+([\d.]+)%"), Target(">=", 50)),),
    ),
    Benchmark(
        "query",
        "Query API over a 1,000,000-event PostgreSQL store",
        "bench.query",
        # seeded from scratch every run: the figures never depend on what an earlier run left
        ("--fresh",),
        (
            "--events",
            "3000",
            "--attempts",
            "200",
            "--requests",
            "20",
            "--scratch",
        ),
        (Figure("worst p99 of 4 endpoints", "ms", worst_p99, Target("<=", 50)),),
    ),
    _topology("ndjson"),
    _topology("postgres"),
    _query_load("ndjson"),
    _query_load("postgres"),
    Benchmark(
        "lifecycle",
        "Export and import of 1,000,000 events on both backends; writer drain during retain",
        "bench.lifecycle",
        ("--events", "1000000"),
        ("--events", "4000", "--window", "0.3"),
        (
            Figure("NDJSON import", "events/s", rx(r"^ndjson\s+import:\s+([\d,]+) events/s")),
            Figure("NDJSON export", "events/s", rx(r"^ndjson\s+export:\s+([\d,]+) events/s")),
            Figure("PostgreSQL import", "events/s", rx(r"^postgres\s+import:\s+([\d,]+) events/s")),
            Figure("PostgreSQL export", "events/s", rx(r"^postgres\s+export:\s+([\d,]+) events/s")),
            Figure(
                "import peak RSS (largest)",
                "MiB",
                lambda out: max(
                    (float(x) for x in re.findall(r"import:.*peak RSS\s+([\d.]+) MiB", out)),
                    default=None,
                ),
                Target("<=", 300),
            ),
            Figure(
                "NDJSON writer drop while retaining",
                "%",
                rx(r"^ndjson\s+retention:.*drop ([-\d.]+)%"),
                Target("<=", 20),
            ),
            Figure(
                "PostgreSQL writer drop while retaining",
                "%",
                rx(r"^postgres\s+retention:.*drop ([-\d.]+)%"),
                Target("<=", 20),
            ),
        ),
    ),
    Benchmark(
        "verify",
        "Chain check: full walk vs incremental after 500 new events (200,000-event partition)",
        "bench.verify",
        (),
        ("--events", "5000", "--rounds", "2"),
        (
            Figure(
                "full walk time / incremental check time",
                "x",
                rx(r"incremental [\d.]+ ms \(([\d,]+)x less time\)"),
                Target(">=", 10),
            ),
        ),
    ),
    Benchmark(
        "forwarder",
        "Spider forwarder beside the writers of one consumer (NDJSON)",
        "bench.forwarder",
        (),
        ("--bundles", "200", "--rounds", "1"),
        (
            Figure("writers beside forwarder / alone", "", rx(r"\(ratio ([\d.]+)\)")),
            Figure("forwarder send rate", "bundles/s", rx(r"^forwarder:\s+median ([\d,]+)")),
        ),
    ),
    Benchmark(
        "bigbundle",
        "Big bundles with bounded memory (each scenario on its own Redis)",
        "bench.bigbundle",
        (),
        (
            "--files",
            "5000",
            "--burst-files",
            "2000",
            "--clients",
            "4",
            "--backlog",
            "20",
            "--backlog-files",
            "500",
        ),
        (
            Figure(
                "100,000-event bundle: events not stored",
                "events",
                shortfall(r"^big: .*stored (\d+)/(\d+)"),
                Target("<=", 0),
            ),
            Figure(
                "100,000-event bundle: ingest peak RSS",
                "MiB",
                rx(r"^big: .*ingest peak RSS ([\d.]+) MiB"),
                Target("<=", 350),
            ),
            Figure(
                "16 concurrent 9 MiB bundles: ingest peak RSS",
                "MiB",
                rx(r"^burst: .*peak RSS ([\d.]+) MiB"),
                Target("<=", 400),
            ),
            Figure(
                "16 concurrent 9 MiB bundles: accepted ones incomplete in the stream",
                "bundles",
                rx(r"^burst: .*incomplete: (\d+)"),
                Target("<=", 0),
            ),
            Figure(
                "16 concurrent 9 MiB bundles: refused ones that left entries",
                "bundles",
                rx(r"^burst: .*refused bundles with entries: (\d+)"),
                Target("<=", 0),
            ),
            Figure(
                "backlog of 500 x 3,000-event bundles: consumer peak RSS",
                "MiB",
                rx(r"^backlog \(default byte bound\): .*consumer peak RSS ([\d.]+) MiB"),
                Target("<=", 768),
            ),
        ),
    ),
    Benchmark(
        "cluster",
        "Single Redis node vs a private 3-master Redis Cluster, one run (consumer drain, ingest)",
        "bench.cluster",
        (),
        ("--rounds", "1", "--bundles", "300", "--seconds", "1"),
        (
            Figure(
                "consumer drain, cluster / single node",
                "",
                rx(r"^consumer drain: .*cluster/single ([\d.]+)"),
            ),
            Figure(
                "ingest accepted, cluster / single node",
                "",
                rx(r"^ingest accepted: .*cluster/single ([\d.]+)"),
            ),
        ),
    ),
    Benchmark(
        "client",
        "Worker client vs leviathan-cp bench's poster, one request in flight, 20-event bundles",
        "bench.client",
        (),
        ("--rounds", "1", "--seconds", "0.5"),
        (
            Figure(
                "client / leviathan-cp bench events/s",
                "",
                rx(r"^client/bench = ([\d.]+)"),
                Target(">=", 0.8),
            ),
            Figure("client", "events/s", rx(r"^client \(1 thread\): median ([\d,]+)")),
            Figure(
                "client with a disk spool / leviathan-cp bench",
                "",
                rx(r"^client\+spool/bench = ([\d.]+)"),
            ),
        ),
    ),
    Benchmark(
        "stack",
        "Whole stack: one ingest + one consumer, PostgreSQL, own Redis (leviathan-cp bench)",
        "bench.stack_load",
        (),
        ("--seconds", "2", "--workers", "2", "--burst", "1"),
        (
            Figure("persisted", "events/s", rx(r"^persisted: ([\d,.]+) events/s")),
            Figure("accepted p99 latency", "ms", rx(r"^accepted p99: ([\d.]+) ms")),
            Figure("peak RSS ingest", "MiB", rx(r"^peak RSS MiB: .*ingest ([\d.]+)")),
            Figure("peak RSS consumer", "MiB", rx(r"^peak RSS MiB: .*consumer ([\d.]+)")),
            Figure(
                "accepted events missing or doubled in storage",
                "events",
                rx(r"^missing or doubled: (\d+)"),
                Target("<=", 0),
            ),
        ),
    ),
    _readers(),
)
