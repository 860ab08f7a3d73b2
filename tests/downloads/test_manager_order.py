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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from archiver.config import DownloadConfig
from archiver.downloads.fetch import Fetcher, download_session
from archiver.downloads.manager import DownloadManager
from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.downloads.rig import FILE, LOCAL
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
async def one_worker_queue(tmp_path: Path) -> AsyncIterator[Queue]:
    root = tmp_path / "archive"
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        async with (
            scripted_zoom() as zoom,
            client_for(zoom) as client,
            download_session(LOCAL, 4) as http,
        ):
            zoom.messages = []
            fetcher = Fetcher(http, LOCAL, tmp_dir=root / "tmp", max_bytes=1 << 20)
            manager = DownloadManager(
                DownloadConfig(
                    workers=1,
                    allowed_hosts=LOCAL.allowed_hosts,
                    allowed_schemes=LOCAL.allowed_schemes,
                    allow_private_addresses=True,
                ),
                root,
                state=state,
                writer=writer,
                client=client,
                fetcher=fetcher,
            )
            try:
                yield Queue(root, state, writer, manager, zoom)
            finally:
                fetcher.close()
    finally:
        await writer.close()
        state.close()


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
