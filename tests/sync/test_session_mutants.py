"""SessionSync.incremental on its own, step by step (issue 17, survivor 2).

Each ISync page's `sync_token` must be saved once the page is durable, and the next ISync
(in this step or after a restart) must send it. Without the save nothing is lost (the old
token repeats the same window and the writer absorbs the repeats), so only a test that looks
at the tokens themselves can tell.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from archiver.errors import SessionGoneError, SyncTokenInvalid, ZoomResponseError
from archiver.sync.session import ENDPOINT, SessionSync, _behind, _default_pause
from archiver.sync.walk import NO_TOKEN_LIMIT, Phase
from archiver.zoom.models import SyncPage, parse_time
from tests.store.conftest import read_lines
from tests.sync.conftest import SESSION, Bed

T0 = datetime(2024, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)


def newest_token(bed: Bed) -> str | None:
    current = bed.state.get_session(SESSION)
    assert current is not None
    return current.newest_token


def token_of_call(bed: Bed, number: int) -> str:
    """The token the page answering request `number` carried."""
    issued = {at: token for token, (_lo, _hi, at) in bed.zoom._windows.items()}
    return issued[number]


async def test_incremental_saves_each_isync_token_and_sends_it_next(bed: Bed) -> None:
    bed.zoom.add(3)
    await bed.session_sync().incremental(SESSION)  # first contact: FSync
    assert [kind for kind, _ in bed.zoom.calls] == ["FSync"]
    assert newest_token(bed) == token_of_call(bed, 0)

    for _ in range(3):
        bed.zoom.add(2)
        before = len(bed.zoom.calls)
        sent = newest_token(bed)
        # A new SessionSync each time, as after a restart: only the state carries the token.
        result = await bed.session_sync().incremental(SESSION)
        assert bed.zoom.calls[before:] == [("ISync", sent)]
        assert result.new == 2
        assert newest_token(bed) == token_of_call(bed, before)
        assert newest_token(bed) != sent

    # Caught up: the next ISync comes back empty, nothing archived twice.
    before = len(bed.zoom.calls)
    result = await bed.session_sync().incremental(SESSION)
    assert bed.zoom.calls[before:] == [("ISync", token_of_call(bed, before - 1))]
    assert (result.new, result.changed) == (0, 0)
    assert bed.archived_ids() == bed.truth_ids()


async def test_full_isync_pages_chain_their_tokens_within_one_step(bed: Bed) -> None:
    bed.zoom.add(2)
    await bed.session_sync().incremental(SESSION)
    bed.zoom.add(bed.count)  # one full page: ISync is repeated
    before = len(bed.zoom.calls)
    await bed.session_sync().incremental(SESSION)
    calls = bed.zoom.calls[before:]
    assert [kind for kind, _ in calls] == ["ISync", "ISync"]
    assert calls[1][1] == token_of_call(bed, before)
    assert newest_token(bed) == token_of_call(bed, before + 1)


class RefusingWriter:
    """The real writer, refusing (as for a record it cannot take) the next page."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self.refuse = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    async def append_messages(self, *args: Any, **kwargs: Any) -> Any:
        if self.refuse:
            raise ValueError("record cannot be archived")
        return await self._writer.append_messages(*args, **kwargs)


async def test_the_token_is_not_saved_for_a_page_that_is_not_durable(bed: Bed) -> None:
    bed.zoom.add(3)
    writer = RefusingWriter(bed.writer)
    sync = SessionSync(bed.zoom, writer, bed.state, count=bed.count)
    await sync.incremental(SESSION)
    saved = newest_token(bed)
    bed.zoom.add(2)
    writer.refuse = True
    with pytest.raises(ZoomResponseError, match="page refused by the archive"):
        await sync.incremental(SESSION)
    assert newest_token(bed) == saved  # the page is not in the manifest: its token is not kept
    writer.refuse = False
    before = len(bed.zoom.calls)
    result = await sync.incremental(SESSION)
    assert bed.zoom.calls[before] == ("ISync", saved)
    assert result.new == 2
    assert bed.archived_ids() == bed.truth_ids()


# --- mutmut survivors in incremental, _isync, backfill, _behind (docs/TESTING.md) -----------


def fast(bed: Bed, api: Any = None, pauses: list[int] | None = None) -> SessionSync:
    def pause(attempt: int) -> float:
        if pauses is not None:
            pauses.append(attempt)
        return 0.0

    return SessionSync(api or bed.zoom, bed.writer, bed.state, count=bed.count, pause=pause)


class RefuseOnce:
    """The scripted Zoom, refusing (code 300) request number `at`."""

    def __init__(self, bed: Bed, at: int) -> None:
        self.zoom, self.at = bed.zoom, at

    async def sync(
        self, session_id: str, sync_type: str, count: int, token: Any = None
    ) -> SyncPage:
        if len(self.zoom.calls) == self.at:
            self.zoom.calls.append((sync_type, token))
            raise SyncTokenInvalid("expired token", status=400, code=300)
        return await self.zoom.sync(session_id, sync_type, count, token)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_a_7035_is_logged_with_its_code_and_session(bed: Bed) -> None:
    bed.zoom.add(3)
    await fast(bed).incremental(SESSION)
    bed.zoom.add(bed.count + 1)
    with capture_logs() as logs:
        await fast(bed).incremental(SESSION)
    [entry] = events(logs, "sync_resync")
    assert (entry["code"], entry["session_id"], entry["log_level"]) == (7035, SESSION, "info")


async def test_a_session_behind_its_listed_time_is_logged_and_recovered(bed: Bed) -> None:
    bed.zoom.add(3)
    await fast(bed).incremental(SESSION)
    newest = parse_time(bed.zoom.messages[-1]["date_time"])
    assert newest is not None
    listed = newest + timedelta(hours=1)
    start = len(bed.zoom.calls)
    with capture_logs() as logs:
        result = await fast(bed).incremental(SESSION, listed)
    [entry] = events(logs, "sync_behind_list")
    assert (entry["listed"], entry["session_id"]) == (str(listed), SESSION)
    # ISync found nothing newer; the step recovered once: an FSync, whose page is all held
    assert [kind for kind, _ in bed.zoom.calls[start:]] == ["ISync", "FSync"]
    assert result.synced_to == newest
    # Caught up with the list: no recovery.
    start = len(bed.zoom.calls)
    with capture_logs() as logs:
        await fast(bed).incremental(SESSION, newest)
    assert events(logs, "sync_behind_list") == []
    assert [kind for kind, _ in bed.zoom.calls[start:]] == ["ISync"]


async def test_isync_pages_without_token_are_repeated_then_fail_the_step(bed: Bed) -> None:
    bed.zoom.add(3)
    await fast(bed).incremental(SESSION)
    saved = newest_token(bed)
    bed.zoom.add(bed.count)  # with the boundary message: one full page, then a short one
    start = len(bed.zoom.calls)
    # one page without token, then the full one with (the count starts again), then only
    # pages without
    bed.zoom.no_token = {start} | {start + 2 + n for n in range(NO_TOKEN_LIMIT)}
    bed.zoom.isync_boundary = True  # every ISync page holds a message, even when caught up
    pauses: list[int] = []
    with pytest.raises(ZoomResponseError, match="without sync_token") as raised:
        await fast(bed, pauses=pauses).incremental(SESSION)
    assert (raised.value.session_id, raised.value.endpoint) == (SESSION, ENDPOINT)
    assert str(raised.value).startswith(
        f"{NO_TOKEN_LIMIT} non-empty sync pages in a row without sync_token; "
        "the walk keeps its cursor and is tried again later"
    )
    assert pauses == [1, *range(1, NO_TOKEN_LIMIT)]
    calls = bed.zoom.calls[start:]
    assert [kind for kind, _ in calls] == ["ISync"] * (2 + NO_TOKEN_LIMIT)
    assert calls[0][1] == calls[1][1] == saved  # the same request again
    assert {token for _, token in calls[2:]} == {token_of_call(bed, start + 1)}
    assert newest_token(bed) == token_of_call(bed, start + 1)


async def test_a_backfill_turn_advances_exactly_its_page_budget(bed: Bed) -> None:
    bed.zoom.add(60)
    sync = fast(bed)
    await sync.incremental(SESSION)
    for budget in (1, 3):
        start = len(bed.zoom.calls)
        result = await sync.backfill(SESSION, budget, lambda: False)
        assert [kind for kind, _ in bed.zoom.calls[start:]] == ["BSync"] * budget
        assert result.new == budget * bed.count
    assert (await sync.backfill(SESSION, 0, lambda: False)).new == 0


async def test_re_walk_pages_after_a_refused_cursor_cost_no_budget(bed: Bed) -> None:
    bed.zoom.add(60)
    sync = fast(bed)
    await sync.incremental(SESSION)  # FSync: 5 messages
    await sync.backfill(SESSION, 3, lambda: False)  # 15 more
    start = len(bed.zoom.calls)
    with capture_logs() as logs:
        result = await fast(bed, RefuseOnce(bed, start)).backfill(SESSION, 2, lambda: False)
    [entry] = events(logs, "walk_cursor_refused")
    assert (entry["code"], entry["session_id"]) == (300, SESSION)
    # refused BSync, FSync from the top, 3 BSyncs over what is held (free), 2 that advance
    kinds = [kind for kind, _ in bed.zoom.calls[start:]]
    assert kinds == ["BSync", "FSync"] + ["BSync"] * 5
    assert result.new == 2 * bed.count
    assert len(bed.archived_ids()) == 30


@pytest.mark.parametrize(
    ("synced", "listed", "behind"),
    [
        (None, None, False),
        (T0, None, False),
        (None, T0, True),
        (T0, T0, False),
        (T0 - timedelta(seconds=1), T0, True),
        (T0 + timedelta(seconds=1), T0, False),
        # to the second: a fraction either side is the same second
        (T0.replace(microsecond=0), T0.replace(microsecond=900_000), False),
        (T0.replace(microsecond=900_000), T0.replace(microsecond=0), False),
    ],
)
def test_behind_compares_to_the_second(
    synced: datetime | None, listed: datetime | None, behind: bool
) -> None:
    assert _behind(synced, listed) is behind


async def test_isync_raises_the_high_water_mark_to_its_newest_message(bed: Bed) -> None:
    bed.zoom.add(3)
    await fast(bed).incremental(SESSION)
    bed.zoom.add(2)
    result = await fast(bed).incremental(SESSION)
    assert result.synced_to == parse_time(bed.zoom.messages[-1]["date_time"])
    assert fast(bed).synced_to(SESSION) == result.synced_to


async def test_a_step_that_recovered_from_7035_does_not_recover_again(bed: Bed) -> None:
    bed.zoom.add(3)
    await fast(bed).incremental(SESSION)
    bed.zoom.add(bed.count + 1)
    newest = parse_time(bed.zoom.messages[-1]["date_time"])
    assert newest is not None
    start = len(bed.zoom.calls)
    # The list says later than anything Zoom will return: the recovery is not repeated in
    # this step (the supervisor reports the session behind instead).
    await fast(bed).incremental(SESSION, newest + timedelta(days=1))
    assert [kind for kind, _ in bed.zoom.calls[start:]].count("FSync") == 1


async def test_a_backfill_before_any_incremental_starts_with_first_contact(bed: Bed) -> None:
    bed.zoom.add(12)
    result = await fast(bed).backfill(SESSION, 1, lambda: False)
    assert [kind for kind, _ in bed.zoom.calls] == ["FSync", "BSync"]
    assert newest_token(bed) == token_of_call(bed, 0)
    assert result.new == 2 * bed.count


class Gone:
    """The scripted Zoom, answering every request 404 / 12004: the session is gone."""

    def __init__(self, bed: Bed) -> None:
        self.zoom = bed.zoom

    async def sync(
        self, session_id: str, sync_type: str, count: int, token: Any = None
    ) -> SyncPage:
        self.zoom.calls.append((sync_type, token))
        raise SessionGoneError(
            "Session does not exist", status=404, code=12004, session_id=session_id
        )


@pytest.mark.parametrize("step", ["incremental", "backfill"])
async def test_a_session_gone_upstream_is_marked_and_recorded(bed: Bed, step: str) -> None:
    sync = fast(bed, Gone(bed))
    with capture_logs() as logs:
        if step == "incremental":
            result = await sync.incremental(SESSION)
        else:
            result = await sync.backfill(SESSION, 3, lambda: False)
    assert result.gone
    assert (result.phase, result.synced_to) == (None, None)  # not read for a gone session
    current = bed.state.get_session(SESSION)
    assert current is not None and current.gone
    [line] = [entry for entry in read_lines(bed.root) if entry["kind"] == "event"]
    assert (line["event"], line["session_id"], line["status"]) == ("session_gone", SESSION, 404)
    [entry] = events(logs, "session_gone")
    assert entry["session_id"] == SESSION and "Session does not exist" in entry["error"]
    assert entry["log_level"] == "warning"


async def test_a_walk_probably_at_the_start_waits_for_its_confirm_turn(bed: Bed) -> None:
    bed.zoom.add(3)  # a short first page: the start is probable, not proven
    sync = fast(bed)
    await sync.incremental(SESSION)
    start = len(bed.zoom.calls)
    result = await sync.backfill(SESSION, 5, lambda: False)
    assert bed.zoom.calls[start:] == []
    assert (result.phase, result.backfill_done) == (Phase.PROBABLE_START, False)
    assert result.synced_to == parse_time(bed.zoom.messages[-1]["date_time"])
    result = await sync.backfill(SESSION, 5, lambda: False, confirm=True)
    assert [kind for kind, _ in bed.zoom.calls[start:]] == ["BSync"]
    assert (result.phase, result.backfill_done) == (Phase.CONFIRMED, True)


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(0, 0.5), (1, 1.0), (2, 2.0), (5, 16.0), (6, 30.0), (60, 30.0)]
)
def test_the_default_pause_doubles_up_to_thirty_seconds(attempt: int, seconds: float) -> None:
    assert _default_pause(attempt) == seconds
