"""`--once` and parked downloads: the pass ends, incomplete and saying why, when every pending
attachment waits on a refusal with no progress coming soon; never while one can still move."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from archiver.daemon import RunOutcome
from archiver.downloads import manager as manager_module
from archiver.sync.supervisor import PARK_LIMIT_ONCE
from tests.downloads.rig import running_manager
from tests.downloads.test_parking import BudgetPausedFor
from tests.zoom.scripted import SESSION, Reply, scripted_zoom


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_module, "RETRY_BASE", 0.01)
    monkeypatch.setattr(manager_module, "PARK_BASE", 0.01)


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_budget_paused_for_hours_ends_the_pass_as_pending(tmp_path: Path) -> None:
    def paused(client: Any) -> Any:
        return BudgetPausedFor(client, "m1", times=1_000, wait=3_600.0)

    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom, wrap_client=paused) as rig:
        await rig.archive("m1")
        rig.manager.load_pending()  # the URL must be fetched again: the budget says in 1 h
        await _until(lambda: rig.manager.parked == 1)
        assert not rig.manager.idle()
        assert rig.manager.settled_for_once(PARK_LIMIT_ONCE)
        # Only a pause longer than --once waits for makes it hopeless after one refusal.
        assert not rig.manager.settled_for_once(park_limit=7_200.0)
        assert rig.state.attachment_pending(SESSION, "m1", "a-m1")  # pending, never failed
        assert rig.lines("attachment_failed") == []
        stalled = rig.manager.stalled(0)
        assert stalled is not None
        assert stalled.reasons == {"park": 1}


async def test_refusals_in_a_row_end_the_pass_only_after_six(tmp_path: Path) -> None:
    async with scripted_zoom() as zoom:
        zoom.then("get_message", *[Reply(503, b"")] * 200)  # refused for as long as we ask
        async with running_manager(tmp_path, zoom) as rig:
            await rig.archive("m1")
            rig.manager.load_pending()
            seen: list[tuple[int, bool]] = []

            def record_and_check() -> bool:
                job = next(iter(rig.manager._jobs.values()), None)
                if job is not None and job.parked is not None:
                    seen.append((job.parkings, rig.manager.settled_for_once(PARK_LIMIT_ONCE)))
                return bool(seen) and seen[-1][1]

            await _until(record_and_check)
            assert all(not settled for parkings, settled in seen if parkings < 6)
            assert seen[-1][0] >= 6
            assert rig.state.attachment_pending(SESSION, "m1", "a-m1")


async def test_a_job_in_the_ledger_not_yet_queued_is_not_stalled(tmp_path: Path) -> None:
    def paused(client: Any) -> Any:
        return BudgetPausedFor(client, "m1", times=1_000, wait=3_600.0)

    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom, wrap_client=paused) as rig:
        await rig.archive("m1")
        rig.manager.load_pending()
        await _until(lambda: rig.manager.parked == 1)
        await rig.archive("m2")  # written behind the manager's back: its job is in the ledger
        assert not rig.manager.settled_for_once(PARK_LIMIT_ONCE)  # m2 can still be fetched
        await rig.settled("m2")
        assert [line["message_id"] for line in rig.lines("attachment")] == ["m2"]
        await _until(lambda: rig.manager.settled_for_once(PARK_LIMIT_ONCE))


def test_the_summary_says_why_attachments_are_pending() -> None:
    outcome = RunOutcome(
        ok=False,
        failed_sessions={},
        new_messages=0,
        changed_messages=0,
        attachments_pending=2,
        downloads_parked={"park": 2},
    )
    assert outcome.summary() == (
        "pass incomplete: 2 attachment(s) still pending "
        "(parked: 2 URL refresh waits for a paused rate budget)"
    )
