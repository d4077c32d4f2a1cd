"""Every benchmark in one run, written to bench/RESULTS.md: ``python -m bench.run_all``.

Pipeline position: above every tier. Runs each entry of :data:`bench.registry.BENCHMARKS`
(ingest, consumer drain, ingest-to-commit latency, NDJSON append, PostgreSQL write,
query, topology on both backends, chain verification, Spider forwarder, big bundles, the
whole stack, reads beside writes) as its own ``python -m`` process, one after the other,
reads each figure from what the script prints, and writes the whole results file: how to
reproduce it, the machine (CPU, cores, memory, kernel, Python, package and server versions,
git commit), a table of every figure with its target and whether it is met, then each
script's own output.
``--quick`` runs every benchmark at small sizes (a smoke run of the whole set in a minute or
two; its figures say nothing about the targets). Exit 1 when a benchmark failed or a figure is
missing from its output, whatever the figures are.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.machine import describe
from bench.registry import BENCHMARKS, Benchmark

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADER = """\
# Benchmark results

Written in one run by

    {command}

and never edited by hand: history lives in git (`git log -p bench/RESULTS.md`), not in this
file. Every benchmark is a script under `bench/` listed in `bench/registry.py` with its
sizes and targets; `python -m bench.run_all --quick` runs them all at small sizes as a
smoke test (its figures say nothing about the targets).

The development hosts are shared 2-core VMs whose speed drifts by a third within minutes,
so a figure here compares with figures of the same run only. To compare two commits, use
the A/B harness, which runs one benchmark against both in alternation and reports the
median of the per-pair ratios:

    python -m bench.ab main HEAD --pairs 4 --metric 'ndjson: +median ([\\d,]+)' \\
        -- bench.consumer --rounds 1 --skip-postgres

The long versions are not part of this run: `python -m bench.soak --minutes 10` (rounds of
load on a private stack, exact stored counts and memory per round) and
`LEVIATHAN_LONG=1 pytest tests/fuzz` (10,000 cases per property).
"""


@dataclass
class Outcome:
    bench: Benchmark
    command: str
    output: str
    code: int | None  # None: timed out
    seconds: float
    values: list[float | None]

    @property
    def failed(self) -> bool:
        return self.code != 0 or any(v is None for v in self.values)


def run_one(bench: Benchmark, quick: bool, timeout: float) -> Outcome:
    argv = bench.argv(quick)
    command = "python -m " + " ".join(argv)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
        output, code = done.stdout.strip(), done.returncode
        if code != 0:
            output += "\n" + done.stderr.strip()[-3000:]
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        output, code = out + f"\n(timed out after {timeout:.0f} s)", None
    seconds = time.perf_counter() - started
    values = [figure.extract(output) for figure in bench.figures]
    return Outcome(bench, command, output.strip(), code, seconds, values)


def verdict(outcome: Outcome, index: int) -> tuple[str, str, str]:
    """(measured, target, met) cells of one figure."""
    figure, value = outcome.bench.figures[index], outcome.values[index]
    unit = figure.unit if figure.unit in ("", "x", "%") else f" {figure.unit}"
    target = "— (reference)" if figure.target is None else f"{figure.target}{unit}"
    if value is None:
        return "**missing**", target, "no figure"
    whole = figure.unit in ("events", "bundles")  # counts
    measured = (f"{value:,.0f}" if abs(value) >= 100 or whole else f"{value:.2f}") + unit
    if figure.target is None:
        return measured, target, "—"
    return measured, target, "yes" if figure.target.met(value) else "**no**"


def render(outcomes: list[Outcome], command: str, machine: list[str], quick: bool) -> str:
    lines = [HEADER.format(command=command)]
    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines += [f"## Machine (run finished {finished})", "", *machine, ""]
    if quick:
        lines += ["**A `--quick` run: small sizes, the figures say nothing about the targets.**"]
        lines += ["Regenerate with `python -m bench.run_all` on a quiet host.", ""]
    lines += ["## Figures", "", "| benchmark | figure | measured | target | met |"]
    lines += ["|---|---|---|---|---|"]
    for o in outcomes:
        for i, figure in enumerate(o.bench.figures):
            measured, target, met = verdict(o, i)
            lines.append(f"| {o.bench.name} | {figure.label} | {measured} | {target} | {met} |")
    lines.append("")
    for o in outcomes:
        state = "timed out" if o.code is None else f"exit {o.code}"
        lines += [f"## {o.bench.name}: {o.bench.title}", ""]
        lines += [f"`{o.command}` ({state}, {o.seconds:.0f} s)", "", "```", o.output, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every bench")
    p.add_argument("--only", help="comma-separated benchmark names (default: all)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    p.add_argument("--output", type=Path, help="default bench/RESULTS.md (not with --only)")
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    names = [b.name for b in BENCHMARKS]
    chosen = args.only.split(",") if args.only else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(names)}")
    if args.only and args.output is None:
        p.error("--only writes a partial results file: name it with --output")
    output: Path = args.output or HERE / "RESULTS.md"
    redis_url = os.environ.get("LEVIATHAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
    machine = describe(ROOT, redis_url, args.admin_dsn)  # before the load, for its load average
    outcomes: list[Outcome] = []
    for bench in (b for b in BENCHMARKS if b.name in chosen):
        print(f"== {bench.name}: python -m {' '.join(bench.argv(args.quick))}", flush=True)
        outcomes.append(run_one(bench, args.quick, args.timeout))
        print(outcomes[-1].output + "\n", flush=True)
    command = " ".join(["python -m bench.run_all", *(sys.argv[1:] if argv is None else argv)])
    output.write_text(render(outcomes, command, machine, args.quick))
    failed = [o.bench.name for o in outcomes if o.failed]
    if failed:
        print(f"bench.run_all: failed or missing figures: {', '.join(failed)}", file=sys.stderr)
    print(f"wrote {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
