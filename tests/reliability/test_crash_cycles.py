"""Invariants 1 to 4 with the real daemon: crash cycles (20 in make test, 50 in make soak),
each a `run --once` SIGKILLed at a random instant or at a named point (or, when the point
never comes, a run that ends), with faults on and the account changing between cycles;
audited after every cycle and at the end.

The longer version is `python -m bench.crash_harness --cycles 1000`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.harness import CRASH_POINTS, run_crash_cycles


@pytest.mark.parametrize(
    ("CYCLES", "seed"),
    [(20, 7), pytest.param(50, 11, marks=pytest.mark.slow)],
    ids=["20-cycles", "50-cycles"],
)
async def test_crash_cycles_lose_duplicate_and_corrupt_nothing(
    tmp_path: Path,
    CYCLES: int,
    seed: int,
) -> None:
    report = await run_crash_cycles(tmp_path, CYCLES, seed=seed, max_delay=0.6)
    print(report.table())  # shown with -s: the numbers the issue asks to report
    assert report.ok, report.table()
    assert report.cycles == CYCLES
    # The schedule really crashed the daemon, at random and at the named points.
    assert report.random_kills >= CYCLES // 4
    assert sum(report.named_kills.values()) >= CYCLES // 10
    assert set(report.named_kills) <= set(CRASH_POINTS)
    assert sum(report.faults.values()) > 0 and report.revocations > 0
    final = report.final
    assert final.messages_expected > 0 and final.attachments_expected > 0
    # Every attachment was had in the end: faults and crashes cost retries, never a file.
    assert final.attachments_failed == 0
    assert final.attachments_archived == final.attachments_expected
