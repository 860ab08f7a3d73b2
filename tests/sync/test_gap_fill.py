"""The gap fill after 7035/300, request by request (issue 17: mutmut survivors in
SessionSync._fill_gap and _recover).

Nothing here loses a message when it goes wrong: a walk that does not see the covered region
walks on to the start of history, a newest token not saved makes the next ISync meet 7035
again, and the writer absorbs every repeat. So the tests look at the requests themselves:
FSync, then BSync only until a page reaches what the earlier windows covered, and the
session's newest token and high-water mark after it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from archiver.errors import SyncTokenInvalid, ZoomResponseError, ZoomTransientError
from archiver.sync import session as session_module
from archiver.sync.session import SessionSync
from archiver.sync.walk import NO_TOKEN_LIMIT, Phase
from archiver.zoom.models import SyncPage, parse_time
from tests.sync.conftest import SESSION, Bed

HELD = 40  # messages archived (and backfilled to the start) before the gap
NEW = 17  # then this many arrive: more than `count` (5), so ISync answers 7035


class Failing:
    """The scripted Zoom, raising `errors[n]` for request number n (it is still counted)."""

    def __init__(self, bed: Bed, errors: dict[int, Exception]) -> None:
        self.zoom, self.errors = bed.zoom, errors

    async def sync(
        self, session_id: str, sync_type: str, count: int, token: Any = None
    ) -> SyncPage:
        error = self.errors.get(len(self.zoom.calls))
        if error is not None:
            self.zoom.calls.append((sync_type, token))
            raise error
        return await self.zoom.sync(session_id, sync_type, count, token)


def refused() -> SyncTokenInvalid:
    return SyncTokenInvalid("expired token", status=400, code=300)


def fast(bed: Bed, api: Any = None, pauses: list[int] | None = None) -> SessionSync:
    def pause(attempt: int) -> float:
        if pauses is not None:
            pauses.append(attempt)
        return 0.0

    return SessionSync(api or bed.zoom, bed.writer, bed.state, count=bed.count, pause=pause)


async def held_then_gap(bed: Bed) -> int:
    """A session archived and backfilled to its start, then NEW messages: the request number
    the next step starts at."""
    bed.zoom.add(HELD)
    sync = fast(bed)
    await sync.incremental(SESSION)
    while not (await sync.backfill(SESSION, 100, lambda: False)).backfill_done:
        pass
    assert bed.archived_ids() == bed.truth_ids()
    bed.zoom.add(NEW)
    return len(bed.zoom.calls)


def kinds(bed: Bed, start: int) -> list[str]:
    return [kind for kind, _ in bed.zoom.calls[start:]]


def issued_at(bed: Bed, number: int) -> str:
    return next(tok for tok, (_lo, _hi, at) in bed.zoom._windows.items() if at == number)


def newest_token(bed: Bed) -> str | None:
    current = bed.state.get_session(SESSION)
    assert current is not None
    return current.newest_token


async def test_the_gap_walk_stops_where_the_covered_region_begins(bed: Bed) -> None:
    start = await held_then_gap(bed)
    hwm = fast(bed).synced_to(SESSION)
    assert hwm == parse_time(bed.zoom.messages[HELD - 1]["date_time"])

    await fast(bed).incremental(SESSION)

    # 17 new: FSync takes the newest 5, three BSyncs the 12 below; the third page holds
    # messages archived before (older than the high-water mark): the walk ends there, not at
    # the start of history 40 messages further down.
    assert kinds(bed, start) == ["ISync", "FSync", "BSync", "BSync", "BSync"]
    assert bed.archived_ids() == bed.truth_ids()
    assert bed.state.get_meta(f"gap:{SESSION}") in (None, "")
    # The FSync's token is the session's newest end now, and the windows reach its newest.
    assert newest_token(bed) == issued_at(bed, start + 1)
    assert fast(bed).synced_to(SESSION) == parse_time(bed.zoom.messages[-1]["date_time"])

    after = len(bed.zoom.calls)
    result = await fast(bed).incremental(SESSION)
    assert bed.zoom.calls[after:] == [("ISync", issued_at(bed, start + 1))]
    assert (result.new, result.changed) == (0, 0)


async def test_a_refused_gap_cursor_restarts_the_gap_from_fsync(bed: Bed) -> None:
    start = await held_then_gap(bed)
    api = Failing(bed, {start + 3: refused()})  # ISync (7035), FSync, BSync, then this BSync
    await fast(bed, api).incremental(SESSION)
    assert kinds(bed, start) == [
        "ISync",
        "FSync",
        "BSync",
        "BSync",  # refused
        "FSync",  # the gap from the top again
        "BSync",
        "BSync",
        "BSync",
    ]
    assert bed.archived_ids() == bed.truth_ids()
    assert newest_token(bed) == issued_at(bed, start + 4)  # the second FSync's


async def test_gap_fsync_pages_without_token_are_repeated_then_fail_the_step(bed: Bed) -> None:
    start = await held_then_gap(bed)
    bed.zoom.no_token = {start + 1 + n for n in range(NO_TOKEN_LIMIT)}
    pauses: list[int] = []
    with pytest.raises(ZoomResponseError, match=f"{NO_TOKEN_LIMIT} non-empty sync pages") as raised:
        await fast(bed, pauses=pauses).incremental(SESSION)
    assert raised.value.session_id == SESSION
    assert kinds(bed, start) == ["ISync"] + ["FSync"] * NO_TOKEN_LIMIT
    assert pauses == list(range(1, NO_TOKEN_LIMIT))  # a longer pause before each repeat
    # The gap stays open, its cursor at the top, with the count: the next step goes on.
    gap = json.loads(bed.state.get_meta(f"gap:{SESSION}") or "null")
    assert (gap["cursor"], gap["no_token"]) == (None, NO_TOKEN_LIMIT)
    bed.zoom.no_token = set()
    again = len(bed.zoom.calls)
    await fast(bed).incremental(SESSION)
    assert kinds(bed, again)[:2] == ["FSync", "BSync"]
    assert bed.archived_ids() == bed.truth_ids()
    assert bed.state.get_meta(f"gap:{SESSION}") in (None, "")


async def test_gap_fsync_without_token_once_is_asked_again(bed: Bed) -> None:
    start = await held_then_gap(bed)
    bed.zoom.no_token = {start + 1}
    await fast(bed).incremental(SESSION)
    assert kinds(bed, start) == ["ISync", "FSync", "FSync", "BSync", "BSync", "BSync"]
    assert newest_token(bed) == issued_at(bed, start + 2)
    assert bed.archived_ids() == bed.truth_ids()


async def test_gap_bsync_pages_without_token_fail_the_step_at_the_limit(bed: Bed) -> None:
    start = await held_then_gap(bed)
    bed.zoom.no_token = {start + 2 + n for n in range(NO_TOKEN_LIMIT)}
    pauses: list[int] = []
    with pytest.raises(ZoomResponseError, match="without sync_token") as raised:
        await fast(bed, pauses=pauses).incremental(SESSION)
    assert pauses == list(range(1, NO_TOKEN_LIMIT))
    assert raised.value.session_id == SESSION
    assert kinds(bed, start) == ["ISync", "FSync"] + ["BSync"] * NO_TOKEN_LIMIT
    # the same request each time: the cursor stays where the last token put it
    assert len({token for _, token in bed.zoom.calls[start + 2 :]}) == 1


async def test_a_gap_interrupted_by_an_error_resumes_from_its_saved_cursor(bed: Bed) -> None:
    start = await held_then_gap(bed)
    api = Failing(bed, {start + 3: ZoomTransientError("reset", session_id=SESSION)})
    with pytest.raises(ZoomTransientError):
        await fast(bed, api).incremental(SESSION)
    cursor = issued_at(bed, start + 2)  # the first gap BSync's token
    gap = json.loads(bed.state.get_meta(f"gap:{SESSION}") or "null")
    assert gap["cursor"] == cursor
    again = len(bed.zoom.calls)
    await fast(bed).incremental(SESSION)
    # On from where it was (no FSync from the top again); once the gap is closed, the step's
    # ISync starts from the gap's FSync token.
    assert bed.zoom.calls[again:] == [
        ("BSync", cursor),
        ("BSync", issued_at(bed, again)),
        ("ISync", issued_at(bed, start + 1)),
    ]
    assert bed.archived_ids() == bed.truth_ids()
    assert newest_token(bed) == issued_at(bed, len(bed.zoom.calls) - 1)  # that ISync's


async def test_a_refused_gap_cursor_starts_the_no_token_count_again(bed: Bed) -> None:
    start = await held_then_gap(bed)
    streak = NO_TOKEN_LIMIT - 1
    # ISync (7035), FSync, then `streak` BSyncs without token, a refused one, and below the
    # limit again as many FSyncs without token: the count began anew at the refusal.
    bed.zoom.no_token = {start + 2 + n for n in range(streak)}
    refusal = start + 2 + streak
    bed.zoom.no_token |= {refusal + 1 + n for n in range(streak)}
    await fast(bed, Failing(bed, {refusal: refused()})).incremental(SESSION)
    assert kinds(bed, start)[: 3 + 2 * streak] == (
        ["ISync", "FSync"] + ["BSync"] * (streak + 1) + ["FSync"] * streak
    )
    assert bed.archived_ids() == bed.truth_ids()
    assert bed.state.get_meta(f"gap:{SESSION}") in (None, "")


async def test_an_inclusive_bsync_ends_the_backfill_at_the_start(bed: Bed) -> None:
    """Fails before the fix: every BSync repeated the covered message, no page came back
    empty, and one confirm turn made REWALK_PAGES_PER_TURN (2000) calls without ending."""
    bed.zoom.inclusive = True
    bed.zoom.max_calls = 300
    bed.zoom.add(12)
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    for _ in range(4):
        await sync.backfill(SESSION, 8, lambda: False)
    before = len(bed.zoom.calls)
    result = await sync.backfill(SESSION, 8, lambda: False, confirm=True)
    assert bed.archived_ids() == bed.truth_ids()
    assert result.phase is Phase.CONFIRMED and len(bed.zoom.calls) - before <= 8


async def test_an_inclusive_gap_walk_without_hwm_ends(bed: Bed) -> None:
    """Fails before the fix (the step never returns): the first FSync was empty, so hwm is
    unknown and only the start of history ends the gap walk, which an inclusive BSync never
    answers with an empty page."""
    bed.zoom.inclusive = True
    bed.zoom.max_calls = 300
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    bed.zoom.add(12)  # more than count: 7035, the gap walk
    await sync.incremental(SESSION)
    assert bed.archived_ids() == bed.truth_ids()
    assert bed.state.get_meta(f"gap:{SESSION}") in (None, "")


async def test_a_gap_walk_longer_than_its_page_budget_resumes(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gap walk spends at most GAP_PAGES_PER_STEP pages a step; the next step goes on
    from the saved cursor (no FSync again) and the supervisor queues it at once."""
    monkeypatch.setattr(session_module, "GAP_PAGES_PER_STEP", 2)
    bed.zoom.add(3)
    await bed.run_pass(fast=True)
    bed.zoom.add(23)  # 7035: the gap walk needs 1 FSync + 5 BSyncs of 5
    sync = bed.session_sync(pause=lambda _n: 0.0)
    first = await sync.incremental(SESSION)
    assert first.gap_open and bed.state.get_meta(f"gap:{SESSION}")
    fsyncs = sum(1 for kind, _ in bed.zoom.calls if kind == "FSync")
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids()
    assert sum(1 for kind, _ in bed.zoom.calls if kind == "FSync") == fsyncs
