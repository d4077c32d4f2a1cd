"""bench.run_all: the whole results file from one command, every figure read and judged.

The end-to-end test runs ``python -m bench.run_all --quick`` against the real Redis and
PostgreSQL (every benchmark at small sizes, about a minute on a 2-core host) and checks the
file it writes; the unit tests pin the figure extraction and the verdicts, including what a
run reports when a benchmark prints no figure or fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run_all
from bench.registry import (
    BENCHMARKS,
    Benchmark,
    Figure,
    Target,
    rx,
    worst_growth,
    worst_p99,
    worst_p99_growth,
)
from tests.conftest import TEST_POSTGRES_URL, require_service

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(960)
def test_quick_run_writes_every_section_and_every_figure(tmp_path: Path, redis_url: str) -> None:
    require_service("PostgreSQL", TEST_POSTGRES_URL, 5432)
    out = tmp_path / "RESULTS.md"
    env = {**os.environ, "LEVIATHAN_BENCH_REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--output", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    for heading in ("# Benchmark results", "## Machine", "## Figures"):
        assert heading in text
    for line in ("- CPU: ", "- kernel: ", "- Python 3.", "- packages: ", "- servers: Redis "):
        assert line in text
    assert "- code: commit " in text
    assert "python -m bench.ab" in text  # the A/B harness is documented in the header
    assert "unknown" not in text.split("## Figures")[0], "a machine fact could not be read"
    rows = re.findall(r"^\| (\w+) \| (.+?) \| (.+?) \| (.+?) \| (.+?) \|$", text, re.MULTILINE)
    figures = [(b.name, f.label) for b in BENCHMARKS for f in b.figures]
    assert [(r[0], r[1]) for r in rows[1:]] == figures  # rows[0] is the table's heading
    assert all(r[2] != "**missing**" for r in rows), [r for r in rows if "missing" in r[2]]
    for bench in BENCHMARKS:
        assert f"## {bench.name}: {bench.title}" in text
        assert f"`python -m {' '.join(bench.argv(quick=True))}` (exit 0," in text


def test_extractors_read_the_lines_the_scripts_print() -> None:
    assert rx(r"^c/a = ([\d.]+)")("round 1 c/a = 0.50\nc/a = 0.71 (rounds 0.6-0.8)") == 0.71
    assert rx(r"median ([\d,]+)")("ndjson: median 53,487 events/s") == 53487.0
    assert rx(r"median ([\d,]+)")("nothing") is None
    query = (
        "endpoint   p50 ms p99 ms mean ms\n/v1/a   1.00   9.50   2.0\n/v1/b?x=1   2.0  31.25  3.0"
    )
    assert worst_p99(query) == 31.25
    topo = (
        "== ndjson, 1,000 events in the log\n/v1/topology/summary  0.20 1.0 0.3\n"
        "/v1/topology/areas  0.40 1.0 0.3\n"
        "== ndjson, 1,000,000 events in the log\n/v1/topology/summary  0.30 1.0 0.3\n"
        "/v1/topology/areas  0.40 1.0 0.3\n"
    )
    assert worst_growth(topo) == pytest.approx(1.5)
    assert worst_growth(topo.split("== ndjson, 1,000,000")[0]) is None
    assert worst_p99_growth(topo) == pytest.approx(1.0)
    load = topo.replace("summary  0.30 1.0", "summary  0.30 2.5")
    assert worst_p99_growth(load) == pytest.approx(2.5)
    assert worst_p99_growth(load.split("== ndjson, 1,000,000")[0]) is None


@pytest.mark.parametrize(
    ("target", "value", "met"),
    [
        (Target(">=", 0.8), 0.8, True),
        (Target(">=", 0.8), 0.79, False),
        (Target("<=", 15), 15.1, False),
        (Target("within", 0.8, 1.2), 1.21, False),
        (Target("within", 0.8, 1.2), 0.8, True),
    ],
)
def test_targets(target: Target, value: float, met: bool) -> None:
    assert target.met(value) is met


def test_a_missing_figure_or_a_failed_script_fails_the_run() -> None:
    bench = Benchmark(
        "fake",
        "Fake",
        "fake",
        (),
        (),
        (
            Figure("rate", "events/s", rx(r"rate (\d+)"), Target(">=", 10)),
            Figure("ref", "", rx("r (\\d)")),
        ),
    )
    ok = run_all.Outcome(bench, "python -m fake", "rate 1234\nr 3", 0, 1.0, [1234.0, 3.0])
    assert not ok.failed
    assert run_all.verdict(ok, 0) == ("1,234 events/s", ">= 10 events/s", "yes")
    assert run_all.verdict(ok, 1) == ("3.00", "— (reference)", "—")
    missing = run_all.Outcome(bench, "python -m fake", "r 3", 0, 1.0, [None, 3.0])
    assert missing.failed
    assert run_all.verdict(missing, 0) == ("**missing**", ">= 10 events/s", "no figure")
    crashed = run_all.Outcome(bench, "python -m fake", "rate 12\nr 3", 1, 1.0, [12.0, 3.0])
    assert crashed.failed
    text = run_all.render([missing], "python -m bench.run_all", ["- CPU: x"], quick=True)
    assert "| fake | rate | **missing** | >= 10 events/s | no figure |" in text
    assert "--quick" in text


def test_unknown_benchmark_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--only", "ingest,nope"])
    assert exc.value.code == 2
    assert "unknown benchmark nope" in capsys.readouterr().err


def test_a_subset_needs_its_own_output(capsys: pytest.CaptureFixture[str]) -> None:
    # bench/RESULTS.md is always the whole set: a partial run must not overwrite it
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--only", "ingest"])
    assert exc.value.code == 2
    assert "--only writes a partial results file" in capsys.readouterr().err
