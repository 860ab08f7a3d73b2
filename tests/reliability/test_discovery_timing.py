"""Discovery against Zoom's second-resolution clock: what a pass must not miss.

Both found as losses: the first as a flaky failure of tests/test_archiver_e2e.py (the 7035
test), the second by `python -m bench.crash_harness` (one message lost in 250 cycles).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from archiver import daemon
from archiver.simulator import Simulator
from archiver.simulator import state as simulator_state
from tests.helpers import archived_messages, load
from tests.reliability.audit import Truth, final_audit
from tests.reliability.harness import archiver_config, small_account


async def test_once_pass_archives_messages_stamped_ahead_of_our_clock(tmp_path: Path) -> None:
    """Zoom's clock ahead of ours: a pass must archive every message that existed when it
    began, even one stamped a moment "in the future" by our clock."""
    async with Simulator(small_account(21, attachment_probability=0.0)) as sim:
        config = load(archiver_config(tmp_path, sim, sync="count = 250"))
        assert (await daemon.run(config, once=True)).ok
        # The simulator stamps a burst 1 ms apart: 1500 messages run ~1.5 s ahead of the
        # clock, so the session's last message time lies after the start of the next pass.
        session_id = sim.session_ids[0]
        sim.add_messages(1500, session_id=session_id)
        outcome = await daemon.run(config, once=True)
        assert outcome.ok
        assert outcome.new_messages == 1500
        audit = final_audit(tmp_path / "archive", Truth.of(sim))
        assert audit.ok, audit.summary()


async def test_a_message_in_the_same_second_as_the_last_sync_is_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session list says when a session's last message was, to the second. A sync that
    ran within that second has not seen what arrives later in it: the session must stay
    "needs sync", or a second message of that second is skipped until the session's next
    message (a loss without end in a quiet session).

    Zoom's clock runs 3 s ahead of ours here: the simulator stamps both messages inside one
    second that, by our clock, begins 3 s from now, and the second message arrives while the
    pass that archived the first is under way (after its first sync of the session). The pass
    must not call the session synced before that second is over; no race against the wall
    clock, however slow the machine."""
    async with Simulator(small_account(23, attachment_probability=0.0)) as sim:
        config = load(archiver_config(tmp_path, sim))
        assert (await daemon.run(config, once=True)).ok
        session_id = sim.session_ids[0]
        second_start = (int(time.time()) + 3) * 1000  # ms: Zoom's time, 3 s ahead of ours
        monkeypatch.setattr(
            simulator_state, "time", SimpleNamespace(time=lambda: second_start / 1000)
        )
        first = sim.add_messages(1, session_id=session_id)[0]
        archive = tmp_path / "archive"
        run = asyncio.create_task(daemon.run(config, once=True))
        async with asyncio.timeout(60):
            while (session_id, first["message_id"]) not in archived_messages(archive):
                assert not run.done(), "the pass ended without the first message"
                await asyncio.sleep(0.02)
        second = sim.add_messages(1, session_id=session_id)[0]  # 1 ms later: the same second
        assert second["record"]["date_time"] == first["record"]["date_time"]
        assert (await run).ok
        assert (session_id, second["message_id"]) in archived_messages(archive)
        # And the session is complete: a further pass finds nothing it lacked.
        outcome = await daemon.run(config, once=True)
        assert outcome.ok and outcome.new_messages == 0
