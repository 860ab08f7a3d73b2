"""A pass of the real supervisor and SessionSync over one scripted session (`fakezoom.py`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from archiver.sync.session import SessionSync
from archiver.sync.supervisor import Supervisor
from archiver.zoom.models import SessionInfo, SessionPage, parse_time
from tests.helpers import load, write_config
from tests.sync.fakezoom import FakeZoom

SESSION = "s1"


class FakeList:
    """The session list: the one session, with the time of its newest message."""

    def __init__(self, zoom: FakeZoom) -> None:
        self.zoom = zoom
        self.error: Exception | None = None
        # Zoom's clock minus ours, as ZoomClient estimates it from `Date` (None: unknown).
        self.clock_offset: timedelta | None = None

    async def list_sessions(self, **_kwargs: Any) -> SessionPage:
        if self.error is not None:
            raise self.error
        newest = self.zoom.messages[-1]["date_time"] if self.zoom.messages else None
        return SessionPage([SessionInfo(SESSION, "user", parse_time(newest))], None)


@dataclass
class Bed:
    root: Path
    state: State
    writer: ManifestWriter
    zoom: FakeZoom
    listing: FakeList
    config: Any
    count: int = 5

    def session_sync(self, **kwargs: Any) -> SessionSync:
        return SessionSync(self.zoom, self.writer, self.state, count=self.count, **kwargs)

    async def run_pass(self, **kwargs: Any) -> Supervisor:
        """One `--once` pass. `fast=True`: no pauses between retries (new-API tests only),
        unless a `backoff` of the test's own is given. `supervisor`: a subclass to run."""
        fast = kwargs.pop("fast", False)
        kind = kwargs.pop("supervisor", Supervisor)
        sync = self.session_sync(pause=lambda _n: 0.0) if fast else self.session_sync()
        if fast:
            kwargs.setdefault("backoff", lambda _n: 0.0)
        supervisor = kind(self.config, self.listing, self.state, sync, once=True, **kwargs)
        await asyncio.wait_for(supervisor.run(asyncio.Event()), 60)
        return supervisor

    def archived_ids(self) -> set[str]:
        return {mid for (sid, mid) in _message_keys(self.root) if sid == SESSION}

    def truth_ids(self) -> set[str]:
        return {m["message_id"] for m in self.zoom.messages}


def _message_keys(root: Path) -> list[tuple[str, str]]:
    keys = []
    for path in sorted((root / "manifest").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            entry = json.loads(line)
            if entry["kind"] == "message":
                keys.append((entry["session_id"], entry["message_id"]))
    return keys


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    zoom = FakeZoom()
    config = load(
        write_config(
            tmp_path,
            {
                "api_url": "http://127.0.0.1:9/v2",
                "oauth_url": "http://127.0.0.1:9/oauth/token",
                "account_id": "a",
                "client_id": "c",
                "client_secret": "s",
            },
            sync="workers = 2",
        )
    )
    root = config.root
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        yield Bed(root, state, writer, zoom, FakeList(zoom), config)
    finally:
        await writer.close()
        state.close()
