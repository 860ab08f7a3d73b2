"""The deadline queue's order (issue 17, survivor 3): DESIGN.md's download pipeline takes the
attachment whose URL dies first first ("earliest JWT expiry first"). A job whose expiry is
not known (a URL without `exp`, or no URL at all after a restart) may already be dead, so it
goes before every known deadline: unknown first (in the order they came), then earliest,
then latest.

One worker, every job queued before it starts, the file host on loopback; the order is read
from the manifest, where each download's attachment line lands as it finishes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from archiver.downloads.fetch import download_session
from archiver.downloads.manager import PARK_BASE, PARK_CAP, DownloadManager, park_delay
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.downloads.rig import FILE, LOCAL, local_downloads, local_fetcher, open_archive
from tests.helpers import manifest_lines
from tests.zoom.scripted import SESSION, ScriptedZoom, client_for, record, scripted_zoom

HOUR = 3600.0


@dataclass
class Queue:
    root: Path
    state: State
    writer: ManifestWriter
    manager: DownloadManager
    zoom: ScriptedZoom

    async def archive(self, message_id: str, url: str | None) -> dict[str, Any]:
        """A message with one attachment, durable in the manifest (its ledger job with it)."""
        self.zoom.files[message_id] = FILE
        item = record(message_id, url=url or self.zoom.file_url(message_id, time.time() + HOUR))
        self.zoom.messages.append(item)
        await self.writer.append_messages(SESSION, [item], "sync")
        return item

    def downloaded(self) -> list[str]:
        return [
            line["message_id"] for line in manifest_lines(self.root) if line["kind"] == "attachment"
        ]

    async def run_until_done(self, count: int, timeout: float = 30.0) -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(self.manager.run(stop))
        try:
            async with asyncio.timeout(timeout):
                while len(self.downloaded()) < count:
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)


@asynccontextmanager
async def one_worker_queue(
    tmp_path: Path, clock: Callable[[], float] = time.time
) -> AsyncIterator[Queue]:
    async with (
        open_archive(tmp_path) as (root, state, writer),
        scripted_zoom() as zoom,
        client_for(zoom) as client,
        download_session(LOCAL, 4) as http,
    ):
        zoom.messages = []
        fetcher = local_fetcher(http, root)
        manager = DownloadManager(
            local_downloads(1),
            root,
            state=state,
            writer=writer,
            client=client,
            fetcher=fetcher,
            clock=clock,
        )
        try:
            yield Queue(root, state, writer, manager, zoom)
        finally:
            fetcher.close()


def url_without_exp(zoom: ScriptedZoom, name: str) -> str:
    token = jwt.encode({"iss": "crossfile", "aud": "file"}, "k" * 32)
    return f"{zoom.base}/file/{name}?jwt={token}"


async def test_jobs_reach_the_worker_unknown_first_then_earliest_expiry_first(
    tmp_path: Path,
) -> None:
    async with one_worker_queue(tmp_path) as queue:
        now = time.time()
        zoom = queue.zoom
        # Handed over in an order that is none of the expected ones.
        late = await queue.archive("late", zoom.file_url("late", now + 5 * HOUR))
        middle = await queue.archive("middle", zoom.file_url("middle", now + 3 * HOUR))
        early = await queue.archive("early", zoom.file_url("early", now + 1 * HOUR))
        no_exp = await queue.archive("no-exp", url_without_exp(zoom, "no-exp"))
        await queue.manager.on_archived(SESSION, [late, middle, early, no_exp])
        # A job known only from the ledger, as after a restart: no URL, so no expiry.
        await queue.archive("restarted", None)
        assert queue.manager.load_pending() == 1
        assert queue.manager.depth == 5

        await queue.run_until_done(5)

        assert queue.downloaded() == ["no-exp", "restarted", "early", "middle", "late"]
        assert zoom.requests("get_message") == 1  # only the job without a URL asked for one


class Bounds(random.Random):
    """uniform(a, b) at one end: `high` picks b."""

    def __init__(self, high: bool) -> None:
        super().__init__()
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@pytest.mark.parametrize(
    ("parkings", "base", "ceiling"),
    [
        (0, None, PARK_BASE),
        (1, None, PARK_BASE),
        (2, None, 2 * PARK_BASE),
        (4, None, 8 * PARK_BASE),
        (3, 5.0, 20.0),
        (11, None, PARK_CAP),  # 1024 s would be over the cap
        (10_000, None, PARK_CAP),  # no overflow
    ],
)
def test_park_delay_doubles_to_the_cap_with_half_of_it_jittered(
    parkings: int, base: float | None, ceiling: float
) -> None:
    assert park_delay(parkings, Bounds(high=False), base) == ceiling / 2
    assert park_delay(parkings, Bounds(high=True), base) == ceiling


async def test_sync_slows_down_only_when_the_backlog_cannot_beat_the_earliest_expiry(
    tmp_path: Path,
) -> None:
    now = [time.time()]
    async with one_worker_queue(tmp_path, clock=lambda: now[0]) as queue:
        manager, zoom = queue.manager, queue.zoom
        assert (manager.earliest_deadline(), manager.backlog_seconds()) == (None, 0.0)
        first = await queue.archive("first", None)
        await manager.on_archived(SESSION, [first])
        assert manager.backlog_seconds() == 0.0  # no rate measured yet: no grounds to slow
        await queue.run_until_done(1)  # one download measures the rate

        unknown = await queue.archive("unknown", url_without_exp(zoom, "unknown"))
        await manager.on_archived(SESSION, [unknown])
        assert manager.earliest_deadline() is None
        assert not manager.should_slow_sync()  # no expiry known: nothing to race

        near, far = now[0] + 2 * HOUR, now[0] + 5 * HOUR
        sized = []
        for name, exp, size in (("near", near, 1000), ("far", far, 3000)):
            item = await queue.archive(name, zoom.file_url(name, exp))
            item["attachments"][0]["size"] = size
            zoom.files[name] = bytes(size)
            sized.append(item)
        await manager.on_archived(SESSION, sized)
        assert manager.earliest_deadline() == float(int(near))
        # The job of unknown size counts as the average of the known ones: 6000 bytes in all.
        with_unknown = manager.backlog_seconds()
        assert with_unknown > 0
        margin = 300.0  # DownloadConfig's refresh_margin
        assert not manager.should_slow_sync()  # hours left
        now[0] = int(near) - margin - with_unknown / 2
        assert manager.should_slow_sync()  # less time than the backlog needs
        now[0] = int(near) - margin - with_unknown * 2
        assert not manager.should_slow_sync()
        now[0] = int(near)  # past the margin: the window is closed, any backlog is late
        assert manager.should_slow_sync()
        now[0] = time.time()
        await queue.run_until_done(4)
        assert manager.backlog_seconds() == 0.0
