"""The randomized model test: the real SessionSync and Supervisor against any Zoom the docs allow.

Each case (tests/model/scenario.py) draws an account, Zoom's behaviour where the docs leave
it open (short pages, the ISync boundary message, duplicates, either order, pages without a
token, tokens refused L ticks after issue, gateway 404/403/502 pages, 500s, 401s, 429s) and
a few steps: passes (some stopped midway), bursts of new messages, clock advances, the state
cache deleted, a session deleted upstream. Then the faults stop and passes run until one
reports complete. Checked (tests/model/harness.py): no pass raises or runs for ever, every
pass that reports complete holds everything Zoom held when it began, the archive ends equal to
Zoom (nothing missing, nothing twice, nothing invented), and the chain verifies.

    make test:  200 cases (seeds MODEL_SEED_BASE .. +199, default 0)
    make soak:  MODEL_SOAK_CASES cases (default 10,000), seeds from 1,000,000
    replay:     MODEL_SEED=<seed> .venv/bin/pytest -q -p no:cacheprovider tests/model
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from archiver.ops.logs import configure_logging
from tests.model.harness import CaseRun
from tests.model.scenario import NAMED, Case, make_case

CASES = 200
BATCH = 25  # cases per test, run side by side: each pass waits on the supervisor's 50 ms poll
SEED_BASE = int(os.environ.get("MODEL_SEED_BASE", "0"))
SOAK_CASES = int(os.environ.get("MODEL_SOAK_CASES", "10000"))
SOAK_SEED_BASE = 1_000_000
REPLAY = os.environ.get("MODEL_SEED")


def _batches() -> list[list[int]]:
    if REPLAY is not None:
        return [[int(REPLAY)]]
    seeds = list(range(SEED_BASE, SEED_BASE + CASES))
    return [seeds[i : i + BATCH] for i in range(0, CASES, BATCH)]


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """The archiver logs every injected fault; thousands of lines would only slow the run."""
    saved = structlog.get_config()
    configure_logging("critical", "json", stream=io.StringIO())
    yield
    structlog.configure(**saved)


def format_failure(run: CaseRun) -> str:
    first = run.findings[0]
    where = f" for session {first.session_id}" if first.session_id else ""
    lines = [
        f'seed {run.case.seed}: invariant "{first.invariant}" broken{where}: {first.detail}',
        *(f'  also "{f.invariant}" ({f.session_id or "-"}): {f.detail}' for f in run.findings[1:4]),
        f"  case: {run.case.describe()}",
        f"  passes: {'; '.join(p.summary() for p in run.passes)}",
        f"  zoom: {run.model.requests} requests, fired {dict(sorted(run.model.seen.items()))}",
    ]
    to_session = run.model.seen_by.get(first.session_id or "")
    if to_session:
        lines.append(f"  to {first.session_id}: {dict(sorted(to_session.items()))}")
    lines.append(
        f"  replay: MODEL_SEED={run.case.seed} .venv/bin/pytest -q -p no:cacheprovider "
        "tests/model/test_model.py -k cases"
    )
    return "\n".join(lines)


async def run_cases(
    seeds: list[int], directory: Path, concurrency: int, cases: list[Case] | None = None
) -> list[CaseRun]:
    """Run the cases side by side; the failed ones are returned (their folders kept)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int, case: Case) -> CaseRun | None:
        async with gate:
            case_dir = directory / f"case{n}-seed{case.seed}"
            run = CaseRun(case, case_dir)
            findings = await run.run()
            if not findings:
                shutil.rmtree(case_dir, ignore_errors=True)
                return None
            return run

    todo = cases if cases is not None else [make_case(seed) for seed in seeds]
    results = await asyncio.gather(*(one(n, case) for n, case in enumerate(todo)))
    return [run for run in results if run is not None]


@pytest.mark.parametrize("seeds", _batches(), ids=lambda seeds: f"seeds{seeds[0]}")
async def test_model_cases(seeds: list[int], tmp_path: Path) -> None:
    failed = await run_cases(seeds, tmp_path, concurrency=len(seeds))
    assert not failed, "\n\n".join(format_failure(run) for run in failed)


@pytest.mark.parametrize("name", sorted(NAMED))
async def test_model_named(name: str, tmp_path: Path) -> None:
    """One behaviour alone, in the shape that makes it bite (see scenario.NAMED)."""
    failed = await run_cases([], tmp_path, concurrency=1, cases=[NAMED[name]])
    assert not failed, f"{name}: {format_failure(failed[0])}"


@pytest.mark.slow
@pytest.mark.timeout(0)  # thousands of cases: far past pytest's 300 s default, by design
async def test_model_soak(tmp_path: Path) -> None:
    seeds = range(SOAK_SEED_BASE, SOAK_SEED_BASE + SOAK_CASES)
    failed: list[CaseRun] = []
    chunk = 64
    for start in range(0, len(seeds), chunk):
        failed += await run_cases(list(seeds[start : start + chunk]), tmp_path, concurrency=25)
    shown = "\n\n".join(format_failure(run) for run in failed[:10])
    assert not failed, f"{len(failed)} of {SOAK_CASES} cases failed; the first:\n\n{shown}"
