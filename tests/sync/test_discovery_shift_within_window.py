"""Discovery over an offset-paged, oldest-first session list: a session listed on page 1 that
gets a new message moves to the end of the same window, every session behind it moves up a
place and one is never listed; the mover is listed again, on a later page, at its new time.
That second listing is the evidence of the shift: the window is listed again, and the skipped
session is found in the same poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.zoom.models import SessionInfo, SessionPage, SyncPage, parse_time
from tests.sync.conftest import Bed, _message_keys, bed  # noqa: F401  (fixture)
from tests.sync.fakezoom import FakeZoom, make_message


def _at(n: int, moment: datetime) -> dict[str, Any]:
    m = make_message(n)
    m["date_time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return m


class AscendingOffsetList:
    """One session a page, oldest first, offset tokens; X moves when first listed."""

    def __init__(self) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        self.zooms = {sid: FakeZoom() for sid in ("X", "Y", "P")}
        for hours, sid in ((3, "X"), (2, "Y"), (1, "P")):
            self.zooms[sid].messages = [_at(0, now - timedelta(hours=hours))]
        self.moved = False

    def newest(self, sid: str) -> datetime | None:
        msgs = self.zooms[sid].messages
        return parse_time(msgs[-1]["date_time"]) if msgs else None

    async def list_sessions(
        self, *, start: datetime, end: datetime, page_token: Any = None, **_: Any
    ) -> SessionPage:
        rows = [s for s in self.zooms if (t := self.newest(s)) is not None and start <= t <= end]
        rows.sort(key=lambda s: self.newest(s) or start)
        offset = int(page_token or 0)
        page = rows[offset : offset + 1]
        more = offset + 1 < len(rows)
        if page and page[0] == "X" and not self.moved:
            self.moved = True  # X gets a message now: it moves to the end of this window
            self.zooms["X"].messages.append(_at(1, datetime.now(UTC)))
        return SessionPage(
            [SessionInfo(s, "user", self.newest(s)) for s in page],
            str(offset + 1) if more else None,
        )

    async def sync(self, session_id: str, *args: Any, **kwargs: Any) -> SyncPage:
        return await self.zooms[session_id].sync(session_id, *args, **kwargs)


async def test_a_session_moving_within_its_window_makes_the_window_listed_again(
    bed: Bed,  # noqa: F811
) -> None:
    world = AscendingOffsetList()
    bed.listing = world  # type: ignore[assignment]
    bed.zoom = world  # type: ignore[assignment]
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    held = {sid for sid, _ in _message_keys(bed.root)}
    assert held == {"X", "Y", "P"}, f"sessions archived: {sorted(held)}; Zoom holds X, Y and P"
