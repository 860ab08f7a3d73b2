"""Discovery when the session list pages by offset (issue 14, hostile review 3): Zoom
documents only an opaque `next_page_token`; a session that moves out of a window while it is
paged must not hide another."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from archiver.sync import supervisor as supervisor_module
from archiver.zoom.models import SessionInfo, SessionPage, SyncPage, parse_time
from tests.sync.conftest import Bed, _message_keys
from tests.sync.fakezoom import FakeZoom, make_message


class OffsetList:
    """Sessions listed one a page, newest first, by offset into the live list. `mover`: the
    session that gets a new message (now) while its window is paged, `moves` times."""

    def __init__(self, sessions: dict[str, int], mover: str, moves: int = 1) -> None:
        self.zooms = {sid: FakeZoom() for sid in sessions}
        for sid, n in sessions.items():
            self.zooms[sid].add(n)
        self.mover = mover
        self.moves = moves
        self.lists = 0

    def newest(self, sid: str) -> datetime | None:
        messages = self.zooms[sid].messages
        return parse_time(messages[-1]["date_time"]) if messages else None

    async def list_sessions(
        self, *, start: datetime, end: datetime, page_token: Any = None, **_: Any
    ) -> SessionPage:
        self.lists += 1
        rows = [s for s in self.zooms if (t := self.newest(s)) is not None and start <= t <= end]
        rows.sort(key=lambda s: self.newest(s) or start, reverse=True)
        offset = int(page_token or 0)
        page = rows[offset : offset + 1]
        more = offset + 1 < len(rows)
        if page and page[0] == self.mover and self.moves:
            self.moves -= 1
            zoom = self.zooms[self.mover]
            message = make_message(len(zoom.messages))
            message["date_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            zoom.messages.append(message)
        infos = [SessionInfo(s, "user", self.newest(s)) for s in page]
        return SessionPage(infos, str(offset + 1) if more else None)

    async def sync(self, session_id: str, *args: Any, **kwargs: Any) -> SyncPage:
        return await self.zooms[session_id].sync(session_id, *args, **kwargs)


def _world(bed: Bed, world: OffsetList) -> None:
    bed.listing = world  # type: ignore[assignment]
    bed.zoom = world  # type: ignore[assignment]


async def test_a_session_moving_while_its_window_is_paged_hides_no_other(bed: Bed) -> None:
    """Fails before the fix: B moved up into the page already fetched, was never listed,
    never archived, and both passes reported complete."""
    world = OffsetList({"A": 6, "B": 3, "C": 2}, mover="A")
    _world(bed, world)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    held = {sid for sid, _ in _message_keys(bed.root)}
    assert held == {"A", "B", "C"}
    assert bed.state.get_meta(supervisor_module.META_RELIST) in (None, "")


async def test_a_list_that_keeps_moving_is_listed_again_next_pass(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After RELIST_ROUNDS (here none) the windows still moving are saved; a --once pass says
    so (exit 1) and the next pass lists them first."""
    monkeypatch.setattr(supervisor_module, "RELIST_ROUNDS", 0)
    world = OffsetList({"A": 6, "B": 3, "C": 2}, mover="A")
    _world(bed, world)
    supervisor = await bed.run_pass(fast=True)
    assert "<discovery>" in supervisor.incomplete()
    assert "kept moving" in supervisor.incomplete()["<discovery>"]
    assert bed.state.get_meta(supervisor_module.META_RELIST)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert {sid for sid, _ in _message_keys(bed.root)} == {"A", "B", "C"}


async def test_a_window_in_one_page_is_not_listed_again(bed: Bed) -> None:
    """A single page cannot have shifted: no extra list calls for an idle account."""
    bed.zoom.add(3)
    await bed.run_pass(fast=True)
    calls = 0
    original = bed.listing.list_sessions

    async def counting(**kwargs: Any) -> SessionPage:
        nonlocal calls
        calls += 1
        return await original(**kwargs)

    bed.listing.list_sessions = counting  # type: ignore[method-assign]
    await bed.run_pass(fast=True)
    assert 1 <= calls <= 2  # the month since the watermark (two across a month's end)
