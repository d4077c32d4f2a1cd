"""bench.ab: figure extraction, pair summaries and refusals of nonsense arguments."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench import ab


def test_figure_reads_the_first_group_with_thousands_commas() -> None:
    out = "postgres: median 31,234 events/s\nndjson:   median 52,001 events/s\n"
    assert ab.figure(out, re.compile(r"ndjson: +median ([\d,]+)")) == 52001.0


def test_figure_without_a_match_is_an_error_naming_the_pattern() -> None:
    with pytest.raises(ab.AbError, match="no match for --metric"):
        ab.figure("nothing here", re.compile(r"median (\d+)"))


def test_summary_is_the_median_of_per_pair_ratios() -> None:
    # per-pair ratios 0.5, 1.0, 2.0 → median 1.0, although the side medians differ
    line = ab.summary([(10.0, 5.0), (20.0, 20.0), (30.0, 60.0)])
    assert "median A 20.0" in line
    assert "median B 20.0" in line
    assert line.endswith("B/A 1.000")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a", "b", "--metric", "x (1)"], "name the benchmark module"),
        (["a", "b", "--metric", "x", "--", "bench.consumer"], "needs a group"),
        (["a", "b", "--metric", "(", "--", "bench.consumer"], "not a regular expression"),
        (["a", "b", "--metric", "(1)", "--pairs", "0", "--", "m"], "--pairs must be at least 1"),
    ],
)
def test_nonsense_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        ab.cli(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_compare_alternates_and_runs_each_tree(tmp_path: Path) -> None:
    # two trees whose module prints a different figure: B is twice A in every pair
    for name, value in (("a", 10), ("b", 20)):
        pkg = tmp_path / name / "fig"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "__main__.py").write_text(f"print('rate {value} cpu {value + 1}')\n")
    pairs = ab.compare(
        (tmp_path / "a", tmp_path / "b"),
        ["fig"],
        [re.compile(r"rate (\d+)"), re.compile(r"cpu (\d+)")],
        pairs=3,
    )
    assert pairs == [[(10.0, 20.0)] * 3, [(11.0, 21.0)] * 3]


def test_a_failing_run_is_reported_with_its_last_line(tmp_path: Path) -> None:
    pkg = tmp_path / "fig"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("raise SystemExit('broken benchmark')\n")
    with pytest.raises(ab.AbError, match="broken benchmark"):
        ab.run_once(tmp_path, ["fig"], [re.compile(r"(\d+)")])


def test_checkout_makes_and_removes_a_worktree(tmp_path: Path) -> None:
    path = tmp_path / "tree"
    with ab.checkout("HEAD", path) as tree:
        assert (tree / "pyproject.toml").exists()
    assert not path.exists()
    listed = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True).stdout
    assert str(path) not in listed
