"""Ledger jobs written behind the manager's back are fetched within the run (defect 8)."""

from __future__ import annotations

from pathlib import Path

from tests.downloads.rig import file_sha256, running_manager
from tests.zoom.scripted import SESSION, scripted_zoom


async def test_idle_is_false_while_the_ledger_holds_a_job_not_queued(tmp_path: Path) -> None:
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom) as rig:
        assert rig.manager.idle()
        # A message line written without on_archived (a webhook write that finished after
        # its 503, say): its ledger job is pending, and `--once` must not end over it.
        await rig.archive("m1")
        assert not rig.manager.idle()
        await rig.settled("m1", timeout=10)
        [line] = rig.lines("attachment")
        assert (line["message_id"], line["sha256"]) == ("m1", file_sha256())
        await rig.drained()


async def test_the_ledger_is_read_again_on_a_timer(tmp_path: Path) -> None:
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom, reload_interval=0.1) as rig:
        for message_id in ("m1", "m2", "m3"):
            await rig.archive(message_id)  # nobody asks idle(): only the timer can find them
        for message_id in ("m1", "m2", "m3"):
            await rig.settled(message_id, timeout=10)
        assert sorted(line["message_id"] for line in rig.lines("attachment")) == [
            "m1",
            "m2",
            "m3",
        ]
        assert rig.manager.stats.reloaded == 3


async def test_reload_pending_adds_only_what_it_does_not_hold(tmp_path: Path) -> None:
    async with (
        scripted_zoom() as zoom,
        running_manager(tmp_path, zoom, reload_interval=3600) as rig,
    ):
        await rig.archive("m1")
        await rig.archive("m2")
        # m2 is also handed over by sync, with its URL: reloading must not replace that job
        # with one that has to ask the message endpoint for a URL again.
        await rig.manager.on_archived(SESSION, [zoom.messages[-1]])
        assert rig.manager.reload_pending() == 1  # m1
        assert rig.manager.reload_pending() == 0
        await rig.settled("m1", timeout=10)
        await rig.settled("m2", timeout=10)
        assert len(rig.lines("attachment")) == 2
        assert zoom.requests("get_message") == 1  # m1's URL only
        assert rig.manager.reload_pending() == 0  # finished jobs are not pending any more
        assert rig.manager.load_pending() == 0
