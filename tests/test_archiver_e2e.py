"""The archiver core end to end: the real daemon code against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from pathlib import Path

import pytest

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.verify import verify_archive
from tests.helpers import (
    archived_messages,
    assert_matches_truth,
    load,
    manifest_lines,
    truth_messages,
    write_config,
)

QUIRKS = {
    "quirk_overlap": True,
    "quirk_ascending": True,
    "quirk_duplicate": True,
    "quirk_no_token_on_empty": True,
}


def sim_config(**changes: object) -> SimulatorConfig:
    base = SimulatorConfig(seed=11, sessions=30, history_days=300, attachment_probability=0.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def run_once(path: Path) -> daemon.RunOutcome:
    return await daemon.run(load(path), once=True)


def event_names(root: Path) -> list[str]:
    return [line["event"] for line in manifest_lines(root) if line["kind"] == "event"]


async def test_full_backfill_with_every_quirk_matches_ground_truth(tmp_path: Path) -> None:
    async with Simulator(sim_config(sessions=120, **QUIRKS)) as sim:
        path = write_config(tmp_path, sim, sync="count = 50")
        outcome = await run_once(path)
        assert outcome.ok
        root = tmp_path / "archive"
        assert_matches_truth(root, sim)
        assert outcome.new_messages == len(truth_messages(sim))
        report = verify_archive(root)
        assert report.ok, report.problems
        # A second pass finds nothing new and adds only its start/stop events.
        before = sum(1 for _ in manifest_lines(root))
        again = await run_once(path)
        assert again.ok and again.new_messages == 0
        assert sum(1 for _ in manifest_lines(root)) == before + 2


async def test_deleting_state_then_rerunning_adds_no_message_line(tmp_path: Path) -> None:
    async with Simulator(sim_config()) as sim:
        path = write_config(tmp_path, sim)
        assert (await run_once(path)).ok
        root = tmp_path / "archive"
        messages_before = archived_messages(root)
        for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
            (root / name).unlink(missing_ok=True)
        outcome = await run_once(path)
        assert outcome.ok and outcome.new_messages == 0
        assert archived_messages(root) == messages_before
        assert verify_archive(root).ok


async def test_overflow_7035_and_expired_tokens_recover_without_loss(tmp_path: Path) -> None:
    async with Simulator(sim_config(sessions=8)) as sim:
        path = write_config(tmp_path, sim, sync="count = 20")
        assert (await run_once(path)).ok
        session_id = next(iter(truth_messages(sim)))[0]
        # 7035: more new messages than `count` since the last ISync.
        sim.add_messages(75, session_id=session_id)
        assert (await run_once(path)).ok
        assert_matches_truth(tmp_path / "archive", sim)
        # 300: every sync token now expires after a moment.
        sim.set_switches(token_expiry=0.5)
        await asyncio.sleep(1.0)
        sim.add_messages(30, session_id=session_id)
        assert (await run_once(path)).ok
        assert_matches_truth(tmp_path / "archive", sim)
        assert sim.stats()["sync_errors"].get("7035", 0) >= 1
        assert sim.stats()["sync_errors"].get("300", 0) >= 1


async def test_session_deleted_upstream_is_recorded_not_retried(tmp_path: Path) -> None:
    # Zoom still lists the session (its last message moved) but it is gone when we sync it.
    async with Simulator(sim_config(sessions=6, quirk_list_deleted=True)) as sim:
        path = write_config(tmp_path, sim)
        assert (await run_once(path)).ok
        session_id = next(iter(truth_messages(sim)))[0]
        sim.add_messages(3, session_id=session_id)
        sim.delete_session(session_id)
        outcome = await run_once(path)
        assert outcome.ok, outcome.summary()

        def gone() -> list[str]:
            return [
                line["session_id"]
                for line in manifest_lines(tmp_path / "archive")
                if line["kind"] == "event" and line["event"] == "session_gone"
            ]

        # The list shows messages we do not hold: one 12004 could be Zoom's lag, so the
        # session is asked once more; the second 12004 in a row confirms it (both recorded).
        assert gone() == [session_id, session_id]
        # Confirmed for this listing: the next pass neither asks again nor calls it incomplete.
        again = await run_once(path)
        assert again.ok, again.summary()
        assert gone() == [session_id, session_id]
        # The earlier messages of the deleted session stay in the archive.
        assert any(key[0] == session_id for key in archived_messages(tmp_path / "archive"))


async def test_token_revoked_and_faults_mid_run(tmp_path: Path) -> None:
    config = sim_config(sessions=60, fault_5xx=0.05, fault_reset=0.05, fault_truncate=0.02)
    async with Simulator(config) as sim:
        path = write_config(tmp_path, sim, sync="count = 30")

        async def revoke_soon() -> None:
            await asyncio.sleep(0.3)
            sim.revoke_tokens()

        revoker = asyncio.create_task(revoke_soon())
        outcome = await run_once(path)
        await revoker
        assert outcome.ok, outcome.failed_sessions
        assert_matches_truth(tmp_path / "archive", sim)
        assert sim.stats()["tokens_issued"] >= 2
        assert verify_archive(tmp_path / "archive").ok


@pytest.mark.parametrize("header_style", ["full", "iso", "none"])
async def test_rate_limited_run_handles_every_retry_after_style(
    tmp_path: Path, header_style: str
) -> None:
    # The simulator enforces the Pro table; the archiver is told the account is Business, so
    # it starts twice too fast and must slow down on 429s in whatever form they come.
    config = sim_config(sessions=25, rate_limits=True, plan="pro", header_style=header_style)
    async with Simulator(config) as sim:
        path = write_config(
            tmp_path, sim, sync="count = 25", rate_limits='plan = "business"\nshare = 1.0'
        )
        outcome = await asyncio.wait_for(run_once(path), timeout=120)
        assert outcome.ok
        assert_matches_truth(tmp_path / "archive", sim)


async def test_live_traffic_arrives_within_poll_interval(tmp_path: Path) -> None:
    async with Simulator(sim_config(sessions=10)) as sim:
        path = write_config(tmp_path, sim, sync="poll_interval = 1\nlookback = 5")
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(load(path), once=False, stop=stop))
        root = tmp_path / "archive"
        try:
            await _wait_for(lambda: len(archived_messages(root)) >= len(truth_messages(sim)), 30)
            old_session = next(iter(truth_messages(sim)))[0]
            added = sim.add_messages(3, session_id=old_session)
            added += sim.add_messages(2, new_session=True)
            wanted = {(m["session_id"], m["message_id"]) for m in added}
            # poll_interval (1 s) plus a margin for a shared, noisy machine.
            await _wait_for(lambda: wanted <= set(archived_messages(root)), 1 + 10)
        finally:
            stop.set()
            outcome = await asyncio.wait_for(runner, 30)
        assert outcome.ok
        assert_matches_truth(root, sim)
        assert event_names(root)[-1] == "stop"


async def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


def _archiver_tasks() -> list[asyncio.Task[object]]:
    """The running tasks whose coroutine is the archiver's own (not the simulator's)."""
    package = Path(daemon.__file__).parent
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = Path(code.co_filename) if code is not None else None
        if task is asyncio.current_task() or task.done() or where is None:
            continue
        if where.is_relative_to(package) and not where.is_relative_to(package / "simulator"):
            found.append(task)
    return found


@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_cancelled_run_ends_its_own_tasks_before_it_returns(
    tmp_path: Path, cancels: int
) -> None:
    """asyncio.run cancels the main task on Ctrl-C, and a caller may time out: the supervisor
    and the download queue must end with the run, not go on writing after the archive closed
    (the loop would later destroy them pending, their `finally` blocks never run)."""
    async with Simulator(sim_config(sessions=60, attachment_probability=0.5)) as sim:
        path = write_config(tmp_path, sim, sync="count = 5")
        task = asyncio.create_task(daemon.run(load(path), once=True))
        root = tmp_path / "archive"
        deadline = time.monotonic() + 60
        while not any(b"message_id" in s.read_bytes() for s in root.glob("manifest/*.jsonl")):
            assert not task.done() and time.monotonic() < deadline, "no message archived"
            await asyncio.sleep(0.05)
        working = _archiver_tasks()
        assert working, "the run's tasks should be at work"
        task.cancel()
        if cancels == 2:  # a second Ctrl-C, or an outer timeout, while the tasks wind down
            await asyncio.sleep(0)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _archiver_tasks() == []
        # Each ended by the cancellation or on its own, none by failing on a closed archive.
        failed = [t for t in working if not t.cancelled() and t.exception() is not None]
        assert failed == [], [t.exception() for t in failed]
    assert verify_archive(root).ok


async def test_sync_tokens_that_expire_between_calls_end_the_pass_incomplete(
    tmp_path: Path,
) -> None:
    """Tokens refused in any later request (`token_expiry` far below the call spacing): the
    pass ends, incomplete, naming the cause and the fix; before the fix it never ended (with
    `token_expiry = 0.01` and a 5% share of a Pro budget: 50 of 147 messages in 240 s)."""
    async with Simulator(sim_config(sessions=4, token_expiry=1e-6)) as sim:
        path = write_config(tmp_path, sim, sync="count = 10")
        outcome = await asyncio.wait_for(run_once(path), 120)
        assert not outcome.ok
        truth = truth_messages(sim)
        sizes = collections.Counter(sid for sid, _mid in truth)
        deep = {sid for sid, n in sizes.items() if n > 10}  # more than one page: BSyncs needed
        assert deep and deep <= outcome.incomplete.keys()
        reasons = set(outcome.incomplete.values())
        assert all("sync cursor was refused" in why and "[rate_limits] share" in why
                   for why in reasons), reasons  # fmt: skip
        assert "sync cursor was refused" in outcome.summary()
        # What was archived is Zoom's, and verifies (FSync needs no token: first contact works).
        archived = archived_messages(tmp_path / "archive")
        assert {sid for sid, _mid in archived} == set(sizes)
        assert set(archived) <= set(truth)
        assert verify_archive(tmp_path / "archive").ok
        # Tokens that live again: the next pass completes.
        sim.set_switches(token_expiry=None)
        again = await asyncio.wait_for(run_once(path), 120)
        assert again.ok, again.summary()
        assert_matches_truth(tmp_path / "archive", sim)


async def test_a_message_visible_late_is_archived_with_no_lookback(tmp_path: Path) -> None:
    """Zoom shows a message a few seconds after its `date_time` (the simulator's
    `visible_lag`): the pass that began in between cannot see it, and the next must list its
    second again even with `lookback = 0` (before the fix the window began at the watermark,
    after that second, and the message was never archived)."""
    async with Simulator(sim_config(sessions=3)) as sim:
        path = write_config(tmp_path, sim, sync="lookback = 0")
        assert (await run_once(path)).ok
        sim.set_switches(visible_lag=4.5)
        sim.add_messages(2)
        # The next pass begins seconds after their date_time (two: the daemon knows Zoom's
        # clock from `Date`, to the second), while Zoom still hides them.
        await asyncio.sleep(2.2)
        blind = await run_once(path)
        assert blind.ok and blind.new_messages == 0  # Zoom shows nothing new yet
        await asyncio.sleep(2.5)  # now it does
        seen = await run_once(path)
        assert seen.ok and seen.new_messages == 2
        assert_matches_truth(tmp_path / "archive", sim)
