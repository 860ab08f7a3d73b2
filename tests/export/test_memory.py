"""Memory stays flat as the archive grows (DESIGN.md invariant 7), checked at a small scale.

The full measurement (1M messages: time and peak RSS) is `bench/export_bench.py`; here the same
script runs at 2k and 20k messages. Holding the selected lines (or their parsed records) in
memory would add tens of MiB at 20k; the streaming export adds only SQLite's bounded cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "export_bench.py"


def peak_rss_mib(messages: int, work: Path) -> float:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--messages", str(messages), "--dir", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout)
    assert f"exported {messages} message(s)" in report["summary"]
    return float(report["peak_rss_mib"])


def test_peak_rss_does_not_grow_with_the_archive(tmp_path: Path) -> None:
    small = peak_rss_mib(2_000, tmp_path / "small")
    large = peak_rss_mib(20_000, tmp_path / "large")
    assert large - small < 20, (small, large)
