"""A running DownloadManager on real parts: archive root, state, manifest writer, a real
ZoomClient and Fetcher talking to a scripted loopback Zoom (tests/zoom/scripted.py)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.config import DownloadConfig
from archiver.downloads.fetch import Fetcher, download_session
from archiver.downloads.manager import DownloadManager
from archiver.downloads.urls import UrlPolicy
from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.helpers import manifest_lines
from tests.zoom.scripted import SESSION, ScriptedZoom, client_for, record

LOCAL = UrlPolicy(("http",), ("127.0.0.1",), allow_private_addresses=True)
FILE = bytes(range(256)) * 16  # 4,096 bytes


@dataclass
class Rig:
    root: Path
    state: State
    writer: ManifestWriter
    manager: DownloadManager
    zoom: ScriptedZoom

    def lines(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in manifest_lines(self.root) if line["kind"] == kind]

    async def archive(self, message_id: str) -> None:
        """Write a message with one attachment straight to the manifest (its ledger job with
        it), as a webhook write would, without telling the download manager."""
        self.zoom.files[message_id] = FILE
        url = self.zoom.file_url(message_id, time.time() + 86_400)
        item = record(message_id, url=url)
        self.zoom.messages = [m for m in self.zoom.messages if m["message_id"] != message_id]
        self.zoom.messages.append(item)
        await self.writer.append_messages(SESSION, [item], "sync")

    async def settled(self, message_id: str, timeout: float = 30.0) -> None:
        """Wait until the attachment of `message_id` has its line (either kind)."""
        key = (SESSION, message_id, f"a-{message_id}")
        async with asyncio.timeout(timeout):
            while self.state.attachment_pending(*key):
                await asyncio.sleep(0.05)

    async def drained(self, timeout: float = 10.0) -> None:
        """Wait until the manager is idle (the ledger can say "done" a moment before the
        worker that wrote the line has let go of the job)."""
        async with asyncio.timeout(timeout):
            while not self.manager.idle():
                await asyncio.sleep(0.02)


def file_sha256() -> str:
    return hashlib.sha256(FILE).hexdigest()


@asynccontextmanager
async def open_archive(tmp_path: Path) -> AsyncIterator[tuple[Path, State, ManifestWriter]]:
    """ROOT under `tmp_path` with its state and manifest writer, closed on the way out."""
    root = tmp_path / "archive"
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        yield root, state, writer
    finally:
        await writer.close()
        state.close()


def local_downloads(workers: int) -> DownloadConfig:
    """[downloads] for the loopback file host."""
    return DownloadConfig(
        workers=workers,
        allowed_hosts=LOCAL.allowed_hosts,
        allowed_schemes=LOCAL.allowed_schemes,
        allow_private_addresses=True,
    )


def local_fetcher(http: Any, root: Path) -> Fetcher:
    return Fetcher(http, LOCAL, tmp_dir=root / "tmp", max_bytes=1 << 20)


@asynccontextmanager
async def running_manager(
    tmp_path: Path,
    zoom: ScriptedZoom,
    *,
    wrap_client: Callable[[Any], Any] = lambda client: client,
    **options: Any,
) -> AsyncIterator[Rig]:
    async with (
        open_archive(tmp_path) as (root, state, writer),
        client_for(zoom) as client,
        download_session(LOCAL, 4) as http,
    ):
        fetcher = local_fetcher(http, root)
        manager = DownloadManager(
            local_downloads(2),
            root,
            state=state,
            writer=writer,
            client=wrap_client(client),
            fetcher=fetcher,
            **options,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(manager.run(stop))
        try:
            yield Rig(root, state, writer, manager, zoom)
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
            fetcher.close()
