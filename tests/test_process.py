"""The daemon as a real process: SIGKILL at random instants, SIGTERM, the archive lock."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sys
import time
from pathlib import Path

from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.verify import verify_archive
from tests.helpers import (
    archived_messages,
    assert_matches_truth,
    manifest_lines,
    truth_messages,
    write_config,
)

KILL_CYCLES = 20


async def start_daemon(
    path: Path, *extra: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        "run",
        "--config",
        str(path),
        *extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def sim_config(**changes: object) -> SimulatorConfig:
    base = SimulatorConfig(seed=23, sessions=80, history_days=300, attachment_probability=0.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def test_sigkill_at_random_instants_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(5)
    async with Simulator(sim_config(fault_5xx=0.03, quirk_overlap=True)) as sim:
        path = write_config(tmp_path, sim, sync="count = 20\nworkers = 4")
        root = tmp_path / "archive"
        for cycle in range(KILL_CYCLES):
            proc = await start_daemon(path, "--once")
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if cycle % 5 == 4:
                sim.add_messages(15)  # the account keeps changing between crashes
        proc = await start_daemon(path, "--once")
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert_matches_truth(root, sim)
        report = verify_archive(root)
        assert report.ok, report.problems
        assert not list((root / "tmp").iterdir())


async def test_sigterm_during_backfill_exits_0_and_resumes(tmp_path: Path) -> None:
    # A slow simulator makes sure SIGTERM lands in the middle of the backfill.
    async with Simulator(sim_config(fault_slow=0.3, slow_seconds=0.2)) as sim:
        path = write_config(tmp_path, sim, sync="count = 10\nshutdown_grace = 5")
        root = tmp_path / "archive"
        proc = await start_daemon(path)
        await asyncio.sleep(2.0)
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        partial = archived_messages(root)
        assert verify_archive(root).ok
        assert [line.get("event") for line in manifest_lines(root)][-1] == "stop"
        # It stopped when told, not when the work was done: the backfill is unfinished. (How
        # many seconds that took is the machine's; the deadlines are the daemon's own.)
        assert len(partial) < len(truth_messages(sim))
        # Resume: completes the archive, keeping every line written before.
        sim.set_switches(fault_slow=0.0)
        proc = await start_daemon(path, "--once")
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert_matches_truth(root, sim)
        assert set(partial) <= set(archived_messages(root))


async def test_second_daemon_on_the_same_root_refuses_to_start(tmp_path: Path) -> None:
    async with Simulator(sim_config(sessions=5)) as sim:
        path = write_config(tmp_path, sim)
        first = await start_daemon(path)
        try:
            deadline = time.monotonic() + 30
            while not (tmp_path / "archive" / "LOCK").exists() or not any(
                manifest_lines(tmp_path / "archive")
            ):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            second = await start_daemon(path, "--once")
            _, stderr = await asyncio.wait_for(second.communicate(), 30)
            assert second.returncode == 1
            assert "LOCK" in stderr.decode() or "lock" in stderr.decode()
            assert str(first.pid) in stderr.decode()
        finally:
            first.send_signal(signal.SIGTERM)
            await asyncio.wait_for(first.wait(), 30)
        assert first.returncode == 0
