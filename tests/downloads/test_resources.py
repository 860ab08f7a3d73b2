"""A download that finds the process out of descriptors waits for them, end to end (issue 18).

The manager runs on real parts (tests/downloads/rig.py); the descriptors really run out
(RLIMIT_NOFILE lowered to what is open, the rest filled), so the fetch meets a real EMFILE
from the kernel when it opens its connection to the file host.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from archiver.downloads import manager as manager_module
from tests.downloads.rig import file_sha256, running_manager
from tests.downloads.test_deadline import descriptors_exhausted
from tests.zoom.scripted import SESSION, scripted_zoom


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # The schedule's shape is not under test here, only that the job waits and is not failed.
    monkeypatch.setattr(manager_module, "PARK_BASE", 0.01)
    monkeypatch.setattr(manager_module, "RETRY_BASE", 0.01)


async def waits_until(condition: object, timeout: float = 20.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_out_of_descriptors_the_job_waits_and_completes_once_they_are_back(
    tmp_path: Path,
) -> None:
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom) as rig:
        # A first download opens the manifest segment, the state's files and a connection
        # that the pool closes again: what the writer needs later is open before the limit.
        await rig.archive("m0")
        await rig.manager.on_archived(SESSION, [rig.zoom.messages[-1]])
        await rig.settled("m0")
        key = (SESSION, "m1", "a-m1")
        with capture_logs() as logs:
            with descriptors_exhausted():
                # Written to the manifest before the manager hears of it: no socket needed.
                await rig.archive("m1")
                await rig.manager.on_archived(SESSION, [rig.zoom.messages[-1]])
                await waits_until(lambda: rig.manager.stats.resource_waits >= 3)
                # Waiting, not failing: still pending, no line, nothing counted against it.
                assert rig.state.attachment_pending(*key)
                assert rig.manager.fatal is None
                assert rig.manager.stats.failed == 0
                assert rig.manager.stats.failures_by_reason == {}
            await rig.settled("m1")
        assert rig.manager.fatal is None
        assert rig.lines("attachment_failed") == []
        (line,) = [x for x in rig.lines("attachment") if x["message_id"] == "m1"]
        assert line["sha256"] == file_sha256()
        assert rig.manager.stats.done == 2
        waits = [e for e in logs if e["event"] == "download_waits_for_resources"]
        assert len(waits) >= 3
        # Named by the operation that failed (m0's connection may be reused, so the temp
        # file is what cannot be opened; else the socket), never as a disk's fsync.
        operations = ("cannot create a temp file in tmp/", "cannot open a connection")
        for entry in waits:
            assert entry["reason"].startswith(operations), entry
            assert "Too many open files" in entry["reason"], entry
        assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
