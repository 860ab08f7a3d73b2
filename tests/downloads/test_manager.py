"""The download queue's workers: asleep while nothing is queued, awake at once to stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from archiver.config import DownloadConfig
from archiver.downloads.fetch import Fetcher, download_session
from archiver.downloads.manager import MAX_IDLE_WAIT, DownloadManager
from archiver.downloads.urls import UrlPolicy

POLICY = UrlPolicy(("https",), ("zoom.us",), allow_private_addresses=False)


async def test_idle_workers_stop_when_told_not_on_a_timer(tmp_path: Path) -> None:
    async with download_session(POLICY, 2) as http:
        fetcher = Fetcher(http, POLICY, tmp_dir=tmp_path, max_bytes=1024)
        manager = DownloadManager(
            DownloadConfig(workers=3),
            tmp_path,
            state=None,
            writer=None,
            client=None,
            fetcher=fetcher,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(manager.run(stop))
        await asyncio.sleep(0.2)  # the workers found nothing and went to sleep
        assert not running.done()
        assert manager.idle()
        stop.set()
        # Woken by the stop itself: far sooner than the longest idle sleep (60 s).
        await asyncio.wait_for(running, MAX_IDLE_WAIT / 6)
        fetcher.close()
