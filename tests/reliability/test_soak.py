"""The 30-minute soak (slow: `make soak`, or `.venv/bin/python -m bench.soak --minutes 30`).

ZSA_SOAK_MINUTES shortens it for a quick look.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.soak import run_soak


@pytest.mark.slow
@pytest.mark.timeout(0)
async def test_thirty_minutes_of_live_traffic_with_ten_percent_faults(tmp_path: Path) -> None:
    minutes = float(os.environ.get("ZSA_SOAK_MINUTES", "30"))
    report = await run_soak(tmp_path, minutes=minutes, faults=0.10, live_rate=2.0)
    print(report.table())
    assert report.ok, report.table()
    assert report.restarts_kill + report.restarts_term >= 1
    assert sum(report.faults.values()) > 0
    assert report.final.messages_archived > 0 and report.final.attachments_archived > 0
