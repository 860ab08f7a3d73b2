"""The benchmark suite at tiny sizes, so it cannot rot: every row runs and reports sane values.

Timing goals are not asserted here (they need the default sizes and a quiet machine); this
checks that `python -m bench` runs end to end, prints every row of the table, and that each
number is of the right kind and in a plausible range.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _figures(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["number"], f["name"]): f for row in report["rows"] for f in row["figures"]}


def _median(figures: dict[tuple[str, str], dict[str, Any]], row: str, prefix: str) -> float:
    matches = [f for (n, name), f in figures.items() if n == row and name.startswith(prefix)]
    assert matches, f"row {row} has no figure starting with {prefix!r}"
    value = matches[0]["median"]
    assert isinstance(value, int | float), (row, prefix, value)
    return float(value)


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    numbers = [row["number"] for row in report["rows"]]
    assert {n[0] for n in numbers} == set("12345678"), numbers
    assert all(row["error"] is None for row in report["rows"]), report["rows"]
    for number in numbers:
        assert f"| {number} |" in result.stdout, f"row {number} missing from the table"
    assert "Machine:" in result.stdout

    figures = _figures(report)
    for (number, name), fig in figures.items():
        if fig["median"] is not None:
            assert fig["min"] <= fig["median"] <= fig["max"], (number, name, fig)
            assert fig["n"] >= 1
    assert 0.2 < _median(figures, "1", "achieved / allowed") <= 1.05
    assert _median(figures, "1", "wall /") >= 0.9
    assert _median(figures, "2", "messages archived") == 1.0
    assert 0 <= _median(figures, "2", "429 answers") < 100
    assert 1.0 <= _median(figures, "3", "API calls / minimum") < 3
    assert _median(figures, "4", "one-call-per-session") > 1
    assert _median(figures, "5", "messages per archiver CPU-second") > 10
    assert 0 < _median(figures, "6", "archiver ÷ curl") < 100
    # scripts/system-deps installs aria2c (make test runs it first): its figure must be there.
    assert 0 < _median(figures, "6", "archiver ÷ aria2c") < 100
    for (number, name), fig in figures.items():
        if number == "7" and name.startswith("peak RSS"):
            assert 10 < fig["median"] < 1000, (name, fig)
    p50 = _median(figures, "8a", "p50")
    assert 0 <= p50 < 60 and math.isfinite(p50)
    assert report["preset"] == "smoke"


def test_ab_smoke() -> None:
    """`python -m bench.ab` unpacks HEAD's archiver, runs both trees pair by pair, and reports
    the ratio of each pair: at tiny sizes, both being near-identical, near 1."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.ab", "--row", "5", "--pairs", "2", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("pair ") for line in lines) == 2, result.stdout
    ratio = next(line for line in lines if "working tree ÷ baseline" in line)
    median = float(ratio.split(": ")[1].split()[0])
    assert 0.3 < median < 3.0, ratio


def test_replica_bench_smoke(tmp_path: Path) -> None:
    """`python -m bench.replica --smoke`: both parts run (SeaweedFS, the replicator, rclone,
    the daemon with a replica) and report sane figures. rclone comes from scripts/system-deps."""
    out = tmp_path / "replica.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.replica", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [row["number"] for row in report["rows"]] == ["16a", "16b"], report["rows"]
    assert all(row["error"] is None for row in report["rows"]), report["rows"]
    for number in ("16a", "16b"):
        assert f"| {number} |" in result.stdout, f"row {number} missing from the table"
    figures = _figures(report)
    assert 0 < _median(figures, "16a", "replicator ÷ rclone copy") < 100
    assert _median(figures, "16a", "rclone copy") > 0
    p99 = _median(figures, "16b", "p99 line durable")
    assert 0 <= p99 < 60 and math.isfinite(p99)
    assert 0 < _median(figures, "16b", "objects written per 1,000 messages") <= 1000
