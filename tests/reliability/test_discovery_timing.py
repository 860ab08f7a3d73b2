"""Discovery against Zoom's second-resolution clock: what a pass must not miss.

Both found as losses: the first as a flaky failure of tests/test_archiver_e2e.py (the 7035
test), the second by `python -m bench.crash_harness` (one message lost in 250 cycles).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from archiver import daemon
from archiver.simulator import Simulator
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
    tmp_path: Path,
) -> None:
    """The session list says when a session's last message was, to the second. A sync that
    ran within that second has not seen what arrives later in it: the session must stay
    "needs sync", or a second message of that second is skipped until the session's next
    message (a loss without end in a quiet session)."""
    async with Simulator(small_account(23, attachment_probability=0.0)) as sim:
        config = load(archiver_config(tmp_path, sim))
        assert (await daemon.run(config, once=True)).ok
        session_id = sim.session_ids[0]
        for _ in range(5):
            # Start at the top of a second, so the pass fits in the same second.
            await asyncio.sleep(1.02 - time.time() % 1)
            first = sim.add_messages(1, session_id=session_id)[0]
            assert (await daemon.run(config, once=True)).ok
            second = sim.add_messages(1, session_id=session_id)[0]
            if second["record"]["date_time"] == first["record"]["date_time"]:
                break
        else:
            raise AssertionError("could not fit a pass inside one second on this machine")
        assert (session_id, first["message_id"]) in archived_messages(tmp_path / "archive")
        outcome = await daemon.run(config, once=True)
        assert outcome.ok
        assert (session_id, second["message_id"]) in archived_messages(tmp_path / "archive")
