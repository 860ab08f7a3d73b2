"""Webhook islands and the 7035 gap: nothing between the old sync window and the island is lost.

After 7035 (more new messages than `count` since the last ISync), the session sync FSyncs and
then BSyncs back "until it meets a message archived before the recovery began"
(sync/session.py). With webhooks, an archived message is no longer proof that everything
older was fetched: a webhook line is an island ahead of the sync window. When the newest page
holds such a message, the gap is declared closed and the messages between the old window and
the island were never fetched. The sync path now ends the walk only at a message older than
the newest one the earlier sync windows returned (the session's high-water mark).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers import archived_messages
from tests.webhook.conftest import running_daemon, sign


async def test_a_webhook_island_does_not_close_a_7035_gap(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, sync="poll_interval = 3600\ncount = 20") as harness:
        sim = harness.sim
        session_id = sim.session_ids[0]
        # 30 messages nobody was told about (their events were lost, or came while the
        # daemon was down beyond Zoom's last retry), then one whose event arrives.
        missed = sim.add_messages(30, session_id=session_id)
        (last,) = sim.add_messages(1, session_id=session_id)
        body = sim.webhook_event(session_id, last["message_id"])
        status, _ = await harness.post(body, sign(body))
        assert status == 200
        # The event's ISync meets 7035 (31 new > count 20) and recovers.
        deadline = asyncio.get_running_loop().time() + 3
        while asyncio.get_running_loop().time() < deadline:
            archived = archived_messages(harness.root)
            lost = [m for m in missed if (session_id, m["message_id"]) not in archived]
            if not lost:
                break
            await asyncio.sleep(0.1)
        assert not lost, f"{len(lost)} of the 30 messages before the island were never fetched"
