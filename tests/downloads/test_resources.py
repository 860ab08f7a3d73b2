"""A download that finds the process out of descriptors waits for them, end to end (issue 18).

The manager runs on real parts (tests/downloads/rig.py); the descriptors really run out
(RLIMIT_NOFILE lowered to what is open, the rest filled), so the fetch meets a real EMFILE
from the kernel when it opens its connection to the file host.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from archiver.downloads import manager as manager_module
from archiver.downloads.fetch import Fetched
from archiver.ops.metrics import Telemetry, build_registry
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
            await rig.drained()  # the ledger says done a moment before stats.done counts it
        assert rig.manager.fatal is None
        assert rig.lines("attachment_failed") == []
        (line,) = [x for x in rig.lines("attachment") if x["message_id"] == "m1"]
        assert line["sha256"] == file_sha256()
        assert rig.manager.stats.done == 2
        waits = [e for e in logs if e["event"] == "download_waits_for_resources"]
        # One line for the episode (the sampler's minute), the exact count in the stats and
        # in the line that says it is over.
        assert len(waits) == 1, waits
        (back,) = [e for e in logs if e["event"] == "download_resources_back"]
        assert back["waits"] == rig.manager.stats.resource_waits >= 3
        # Named by the operation that failed (m0's connection may be reused, so the temp
        # file is what cannot be opened; else the socket), never as a disk's fsync.
        operations = ("cannot create a temp file in tmp/", "cannot open a connection")
        for entry in waits:
            assert entry["reason"].startswith(operations), entry
            assert "Too many open files" in entry["reason"], entry
        assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs


async def test_out_of_descriptors_at_the_blob_commit_waits_and_is_never_fatal(
    tmp_path: Path,
) -> None:
    """The descriptors run out one step after the fetch, while the fetched file is moved into
    blobs/ (commit_blob opens the fan-out folder to fsync it). Fails on 077c09d: StorageError
    "cannot store blob: Too many open files", the manager's `fatal`, and the daemon exit 1."""
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom) as rig:
        await rig.archive("m0")
        await rig.manager.on_archived(SESSION, [rig.zoom.messages[-1]])
        await rig.settled("m0")
        real_fetch = rig.manager._fetcher.fetch
        exhausted = descriptors_exhausted()
        fetched: list[Fetched] = []

        async def fetch_then_run_out(*args: Any, **kwargs: Any) -> Fetched:
            result = await real_fetch(*args, **kwargs)
            if not fetched:  # another tenant of the process takes the rest, just now
                fetched.append(result)
                exhausted.__enter__()
            return result

        rig.manager._fetcher.fetch = fetch_then_run_out  # type: ignore[method-assign]
        try:
            await rig.archive("m1")
            await rig.manager.on_archived(SESSION, [rig.zoom.messages[-1]])
            await waits_until(lambda: rig.manager.stats.resource_waits >= 2 or rig.manager.fatal)
            assert rig.manager.fatal is None, rig.manager.fatal
            assert rig.state.attachment_pending(SESSION, "m1", "a-m1")
        finally:
            if fetched:
                exhausted.__exit__(None, None, None)
        await rig.settled("m1")
        assert rig.manager.fatal is None
        assert not fetched[0].path.exists()  # the first copy was dropped, not left in tmp/
        (line,) = [x for x in rig.lines("attachment") if x["message_id"] == "m1"]
        assert line["sha256"] == file_sha256()
        assert list((rig.root / "tmp").iterdir()) == []


async def test_a_backlog_out_of_descriptors_logs_one_line_and_counts_every_wait(
    tmp_path: Path,
) -> None:
    """Fails on 077c09d: one warning per job per try (hundreds here, with the fast backoff)."""
    backlog = 40
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom) as rig:
        await rig.archive("m0")
        await rig.manager.on_archived(SESSION, [rig.zoom.messages[-1]])
        await rig.settled("m0")
        for i in range(1, backlog + 1):
            await rig.archive(f"m{i}")
        with capture_logs() as logs:
            with descriptors_exhausted():
                await rig.manager.on_archived(SESSION, list(rig.zoom.messages[1:]))
                await waits_until(lambda: rig.manager.stats.resource_waits >= 4 * backlog)
                waited = rig.manager.stats.resource_waits
            scrape = generate_latest(
                build_registry(Telemetry(poll_interval=60, downloads=rig.manager))
            ).decode()
            for i in range(1, backlog + 1):
                await rig.settled(f"m{i}")
        waits = [e for e in logs if e["event"] == "download_waits_for_resources"]
        assert len(waits) == 1, len(waits)
        (back,) = [e for e in logs if e["event"] == "download_resources_back"]
        assert back["waits"] >= waited
        # The metric has the exact count the log leaves out.
        (sample,) = [x for x in scrape.splitlines() if x.startswith("zsa_download_resource_waits_")]
        assert float(sample.split()[-1]) >= waited >= 4 * backlog
        assert len(rig.lines("attachment")) == backlog + 1
        assert rig.manager.fatal is None
