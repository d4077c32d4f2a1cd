"""A/B: one benchmark run against two commits in alternation, and the ratio of their figures.

Pipeline position: beside every benchmark in ``bench/``. This host is shared and its speed
drifts by a third within minutes, so a figure measured on one commit now and on another
later compares the two spells, not the two commits. This harness checks each commit out
into a temporary worktree (``git worktree add --detach``), then runs the same command
(``python -m <module> <args>``) in one tree and the other in turn, ``--pairs`` times,
extracts one figure per run with ``--metric`` (a regular expression whose first group is a
number; repeat it to extract several figures from the same runs) and prints every pair,
the median of each side and the median of the per-pair ratios B/A. Both runs use this
interpreter and its installed dependencies; the project's own packages come from each
tree, because ``python -m`` puts the working directory first on ``sys.path``.

    python -m bench.ab main HEAD --metric 'ndjson: +median ([\\d,]+)' \\
        -- bench.consumer --rounds 1 --skip-postgres
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class AbError(Exception):
    """A run that failed or printed no figure: the comparison cannot go on."""


@contextmanager
def checkout(rev: str, path: Path) -> Iterator[Path]:
    """A detached worktree of ``rev`` at ``path``, removed afterwards."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(path), rev],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], check=False, capture_output=True
        )


def figure(output: str, metric: re.Pattern[str]) -> float:
    """The first group of ``metric`` in ``output`` as a number (thousands commas allowed)."""
    match = metric.search(output)
    if match is None:
        raise AbError(f"no match for --metric {metric.pattern!r} in the output")
    return float(match.group(1).replace(",", ""))


def run_once(tree: Path, command: list[str], metrics: list[re.Pattern[str]]) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=tree, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise AbError(f"{' '.join(command)} failed in {tree.name}: {tail[0]}")
    return [figure(done.stdout, metric) for metric in metrics]


def compare(
    trees: tuple[Path, Path], command: list[str], metrics: list[re.Pattern[str]], pairs: int
) -> list[list[tuple[float, float]]]:
    """Alternate A, B (then B, A, so neither side always runs first) and collect pairs,
    one list of pairs per metric."""
    out: list[list[tuple[float, float]]] = [[] for _ in metrics]
    for i in range(pairs):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        got: dict[int, list[float]] = {}
        for side in order:
            got[side] = run_once(trees[side], command, metrics)
        for m, metric in enumerate(metrics):
            a, b = got[0][m], got[1][m]
            out[m].append((a, b))
            name = f" [{metric.pattern}]" if len(metrics) > 1 else ""
            print(f"pair {i + 1}{name}: A {_num(a)}  B {_num(b)}  B/A {b / a:.3f}", flush=True)
    return out


def _num(value: float) -> str:
    """A figure as printed: one decimal, three when it is small (a ratio like 0.58)."""
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.3f}"


def summary(pairs: list[tuple[float, float]]) -> str:
    a = statistics.median(p[0] for p in pairs)
    b = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    return f"median A {_num(a)}  median B {_num(b)}  median of pair ratios B/A {ratio:.3f}"


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        usage="python -m bench.ab REV_A REV_B --metric REGEX [--pairs N] -- MODULE [ARGS...]",
    )
    p.add_argument("rev_a", help="baseline commit (anything git rev-parse accepts)")
    p.add_argument("rev_b", help="commit to compare with it")
    p.add_argument(
        "--metric",
        required=True,
        action="append",
        help="regex; group 1 is the figure (repeat for several figures of the same runs)",
    )
    p.add_argument("--pairs", type=int, default=4, help="alternating pairs of runs (4)")
    argv = sys.argv[1:] if argv is None else argv
    # everything after "--" is the benchmark's own command line, never ours to parse
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    if not command:
        p.error("name the benchmark module after --, e.g. -- bench.consumer --rounds 1")
    if args.pairs < 1:
        p.error("--pairs must be at least 1")
    metrics: list[re.Pattern[str]] = []
    for text in args.metric:
        try:
            metric = re.compile(text)
        except re.error as exc:
            p.error(f"--metric is not a regular expression: {exc}")
        if metric.groups < 1:
            p.error("--metric needs a group around the number, e.g. 'median ([\\d,.]+)'")
        metrics.append(metric)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        root = Path(tmp)
        try:
            with checkout(args.rev_a, root / "a") as a, checkout(args.rev_b, root / "b") as b:
                print(f"A = {args.rev_a}  B = {args.rev_b}  command: python -m {' '.join(command)}")
                for metric, pairs in zip(
                    metrics, compare((a, b), command, metrics, args.pairs), strict=True
                ):
                    name = f"[{metric.pattern}] " if len(metrics) > 1 else ""
                    print(name + summary(pairs))
        except subprocess.CalledProcessError as exc:
            print(f"bench.ab: cannot check out: {exc.stderr.decode().strip()}", file=sys.stderr)
            return 2
        except AbError as exc:
            print(f"bench.ab: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
