"""Sync tokens that expire before the next call can come (Zoom's token lifetime is
undocumented; calls are spaced by the shared rate budget).

Each refused cursor restarts the walk from the newest end, whose next cursor is refused
again: before the fix, `run --once` re-walked the newest pages for ever (the simulator with
`token_expiry = 0.01` and a 5% rate share archived 50 of 147 messages in 240 s and never
ended). Now `REFUSAL_LIMIT` restarts that never get past the walk's frontier fail the step
with the reason and the fix, the pass ends incomplete, and nothing archived is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from archiver.errors import (
    SyncTokenInvalid,
    ZoomResponseError,
    ZoomSessionError,
    ZoomTransientError,
)
from archiver.sync import session as session_module
from archiver.sync.session import ENDPOINT, GAP_PAGES_PER_STEP, _gap_walk
from archiver.sync.supervisor import FAILURE_LIMIT_ONCE, Supervisor
from archiver.sync.walk import NO_TOKEN_LIMIT, REFUSAL_LIMIT, Phase, Walk
from archiver.zoom.models import SyncPage
from tests.sync.conftest import SESSION, Bed
from tests.sync.fakezoom import FakeZoom, make_message

# Before the fix a pass never ended: a walk that never ends fails instead of hanging.
MAX_CALLS = 2000


def refused_reason(text: str) -> bool:
    return (
        f"refused {REFUSAL_LIMIT} times in a row" in text
        and "[rate_limits] share" in text
        and "[sync] workers" in text
        and text.endswith(f"session_id={SESSION})")
    )


def refusing_every_other_new_depth(bed: Bed) -> Any:
    """The scripted Zoom's sync, refusing every other BSync that would reach deeper than any
    answered before: after each restart the re-walk reaches that depth again and is
    answered, a page further each time."""
    answered: set[int] = set()
    deeper = 0
    real = bed.zoom.sync

    async def sync(
        session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        nonlocal deeper
        if sync_type == "BSync" and sync_token in bed.zoom._windows:
            lo = bed.zoom._windows[sync_token][0]
            if lo not in answered:
                deeper += 1
                if deeper % 2 == 0:
                    bed.zoom.calls.append((sync_type, sync_token))
                    raise SyncTokenInvalid("expired token", status=400, code=300)
                answered.add(lo)
        return await real(session_id, sync_type, count, sync_token)

    return sync


async def test_a_backfill_whose_every_cursor_expires_ends_the_pass_incomplete(bed: Bed) -> None:
    bed.zoom.add(30)
    bed.zoom.token_life = 0  # a token is refused in any later request
    bed.zoom.max_calls = MAX_CALLS
    with capture_logs() as logs:
        supervisor = await bed.run_pass(fast=True)
    assert refused_reason(supervisor.incomplete()[SESSION])
    assert refused_reason(supervisor.failed_sessions[SESSION])
    # Every attempt has the same allowance: the count is saved cleared when the step fails.
    refusals = [e["refused"] for e in logs if e["event"] == "walk_cursor_refused"]
    assert refusals == list(range(1, REFUSAL_LIMIT + 1)) * FAILURE_LIMIT_ONCE
    assert bed.session_sync().walk_of(SESSION).refused == 0
    # The newest page is held; the walk is not done and says so.
    assert bed.archived_ids() == {m["message_id"] for m in bed.zoom.messages[-bed.count :]}
    assert not bed.state.get_session(SESSION).backfill_done  # type: ignore[union-attr]
    # Tokens that live long enough again: the next pass archives everything.
    bed.zoom.token_life = None
    again = await bed.run_pass(fast=True)
    assert bed.archived_ids() == bed.truth_ids()
    assert again.incomplete() == {}
    assert bed.session_sync().walk_of(SESSION).phase is Phase.CONFIRMED


async def test_a_gap_fill_whose_every_cursor_expires_ends_the_pass_incomplete(bed: Bed) -> None:
    bed.zoom.add(5)
    await bed.run_pass(fast=True)
    bed.zoom.add(17)  # more than a page: the gap after a refused ISync needs BSyncs
    bed.zoom.token_life = 0
    bed.zoom.max_calls = len(bed.zoom.calls) + MAX_CALLS
    with capture_logs() as logs:
        supervisor = await bed.run_pass(fast=True)
    assert refused_reason(supervisor.incomplete()[SESSION])
    refusals = [e["refused"] for e in logs if e["event"] == "gap_cursor_refused"]
    assert refusals[:REFUSAL_LIMIT] == list(range(1, REFUSAL_LIMIT + 1))
    assert max(refusals) == REFUSAL_LIMIT
    # The gap stays open (saved, its count cleared), never closed on a guess.
    gap = bed.session_sync()._gap(SESSION)
    assert gap is not None and gap["refused"] == 0
    assert not supervisor.incomplete().keys() - {SESSION}
    bed.zoom.token_life = None
    again = await bed.run_pass(fast=True)
    assert bed.archived_ids() == bed.truth_ids()
    assert again.incomplete() == {}
    assert bed.session_sync()._gap(SESSION) is None


async def test_restarts_that_get_past_the_frontier_are_not_counted(bed: Bed) -> None:
    """A walk refused more than REFUSAL_LIMIT times in one turn, but each time after it got
    further than before, is making progress: it finishes in the same turn."""
    bed.zoom.add(60)
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    bed.zoom.sync = refusing_every_other_new_depth(bed)  # type: ignore[method-assign]
    with capture_logs() as logs:
        result = await sync.backfill(SESSION, 100, lambda: False, confirm=True)
    refused = [e["refused"] for e in logs if e["event"] == "walk_cursor_refused"]
    assert len(refused) > REFUSAL_LIMIT  # more refusals than the limit in all
    assert set(refused) == {1}  # but never two without progress between them
    assert result.backfill_done
    assert bed.archived_ids() == bed.truth_ids()


# --- tokens that live for one supervisor step: refused at the start of the next ------------


@dataclass
class StepZoom(FakeZoom):
    """A token is refused once a later supervisor step asks with it (the turns of a walk lie
    further apart than the token lifetime; the calls within one follow each other fast)."""

    step: int = 0
    expire_between_steps: bool = False
    _issued_in: dict[str, int] = field(default_factory=dict)

    def _window(self, token: str | None, number: int) -> tuple[int, int]:
        issued = self._issued_in.get(token or "")
        if self.expire_between_steps and issued is not None and issued < self.step:
            raise SyncTokenInvalid("expired token", status=400, code=300)
        return super()._window(token, number)

    def _page(self, page: list[dict[str, Any]], lo: int, hi: int, number: int) -> SyncPage:
        answer = super()._page(page, lo, hi, number)
        if answer.sync_token:
            self._issued_in[answer.sync_token] = self.step
        return answer


class StepCounting(Supervisor):
    async def _step(self, session_id: str, priority: int) -> None:
        self._sync._api.step += 1  # type: ignore[attr-defined]
        await super()._step(session_id, priority)


def step_zoom(bed: Bed, messages: int) -> StepZoom:
    zoom = StepZoom()
    bed.zoom = bed.listing.zoom = zoom
    zoom.add(messages)
    return zoom


async def step_pass(
    bed: Bed, kind: type[Supervisor] = StepCounting
) -> tuple[Supervisor, list[dict[str, Any]]]:
    with capture_logs() as logs:
        supervisor = await bed.run_pass(fast=True, supervisor=kind)
    return supervisor, [e for e in logs if e["event"] == "session_failed"]


async def complete_pass_while_cursors_expire(bed: Bed, zoom: StepZoom) -> None:
    """A pass with every cursor refused in the step after it was issued: it must complete,
    with no failure on the way."""
    zoom.expire_between_steps = True
    zoom.max_calls = len(zoom.calls) + MAX_CALLS
    supervisor, failed = await step_pass(bed)
    assert supervisor.incomplete() == {} and not failed
    assert bed.archived_ids() == bed.truth_ids()


async def test_a_gap_deeper_than_one_step_closes_when_cursors_expire_between_steps(
    bed: Bed,
) -> None:
    """Its re-walk pages after each refused cursor cost no step budget (before: every step
    re-walked the same 50 pages from the top and the pass never ended)."""
    zoom = step_zoom(bed, 5)
    assert (await bed.run_pass(fast=True, supervisor=StepCounting)).incomplete() == {}
    zoom.add(bed.count * (GAP_PAGES_PER_STEP + 10))
    zoom.expire_between_steps = True
    zoom.max_calls = len(zoom.calls) + MAX_CALLS
    supervisor, failed = await step_pass(bed)
    assert supervisor.incomplete() == {} and not failed
    assert bed.archived_ids() == bed.truth_ids()


@pytest.mark.parametrize(
    ("start", "run"),
    [(0, 100), (50, 60)],  # the 100 oldest in one second; 60 in the middle of history
    ids=["oldest", "middle"],
)
async def test_a_run_of_one_second_longer_than_a_turn_is_walked_when_cursors_expire(
    bed: Bed, start: int, run: int
) -> None:
    """A bulk send: more messages of one second than a turn's pages hold. The frontier (a
    time) cannot move inside it, yet each BSync brings messages never archived: progress."""
    zoom = step_zoom(bed, 150)
    for message in zoom.messages[start : start + run]:
        message["date_time"] = zoom.messages[start]["date_time"]
    await complete_pass_while_cursors_expire(bed, zoom)


async def test_a_backdated_message_on_the_newest_page_does_not_count_as_no_progress(
    bed: Bed,
) -> None:
    zoom = step_zoom(bed, 150)
    zoom.messages[-1]["date_time"] = "2020-01-01T00:00:00Z"  # pins the time frontier
    await complete_pass_while_cursors_expire(bed, zoom)


async def test_turns_that_re_walk_without_getting_further_do_not_wipe_failures(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk whose re-walk after each refusal outgrows a turn (3 pages stand in for 2000):
    the turns that end there archive nothing and are no success, so the failures between
    them add up and the pass ends incomplete (before: they reset the count, for ever)."""
    monkeypatch.setattr(session_module, "REWALK_PAGES_PER_TURN", 3)
    zoom = step_zoom(bed, bed.count * 12)
    zoom.expire_between_steps = True
    zoom.max_calls = MAX_CALLS
    supervisor, failed = await step_pass(bed)
    assert refused_reason(supervisor.incomplete()[SESSION])
    assert len(failed) == FAILURE_LIMIT_ONCE
    assert bed.archived_ids() <= bed.truth_ids()


async def test_pages_without_times_end_the_pass_incomplete_not_never(bed: Bed) -> None:
    zoom = step_zoom(bed, 150)
    for message in zoom.messages:
        message["date_time"] = "not a time"
    zoom.expire_between_steps = True
    zoom.max_calls = MAX_CALLS
    supervisor, failed = await step_pass(bed)
    assert SESSION in supervisor.incomplete() and len(failed) == FAILURE_LIMIT_ONCE


async def test_gap_restarts_that_get_past_the_frontier_are_not_counted(bed: Bed) -> None:
    """The gap fill's twin of the backfill case above (hostile review: with the count left
    out of the gap's per-page save, this failed with 'refused 5 times')."""
    bed.zoom.add(5)
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    bed.zoom.add(60)  # ISync: 7035, a gap of 12 pages
    bed.zoom.sync = refusing_every_other_new_depth(bed)  # type: ignore[method-assign]
    with capture_logs() as logs:
        for _ in range(20):  # steps, as the supervisor queues them while the gap is open
            result = await sync.incremental(SESSION)
            if not result.gap_open:
                break
    refused = [e["refused"] for e in logs if e["event"] == "gap_cursor_refused"]
    assert len(refused) > REFUSAL_LIMIT and set(refused) == {1}
    assert sync._gap(SESSION) is None and result.caught_up
    assert bed.archived_ids() == bed.truth_ids()


def test_a_saved_gap_reads_back_as_its_walk() -> None:
    gap = {
        "cursor": "c",
        "no_token": 2,
        "frontier": "2024-01-01T00:00:00+00:00",
        "at": "2024-01-02T00:00:00+00:00",
        "edge": ["m1", "m2"],
        "repeat": "r",
        "refused": 3,
        "widen": 4,
        "seq": 7,
        "hwm": None,
    }
    walk = _gap_walk(gap)
    assert (walk.cursor, walk.phase, walk.no_token, walk.frontier) == (
        "c", Phase.WALKING, 2, "2024-01-01T00:00:00+00:00"
    )  # fmt: skip
    assert (walk.at, walk.edge, walk.repeat) == ("2024-01-02T00:00:00+00:00", ("m1", "m2"), "r")
    assert (walk.refused, walk.widen) == (3, 4)
    # A gap saved by a version without the later fields: their defaults.
    old = _gap_walk({"cursor": None, "seq": 7, "hwm": None})
    assert (old.cursor, old.no_token, old.frontier, old.at, old.edge) == (None, 0, None, None, ())
    assert (old.repeat, old.refused, old.widen) == (None, 0, 0)


async def test_a_refused_gap_cursor_is_saved_before_the_next_call(bed: Bed) -> None:
    """The restarted gap (cursor cleared, count 1, boundary kept) is in the state at once: a
    step that fails on the next call resumes it, not a fresh gap whose boundary would count
    this walk's own pages as the covered region."""
    bed.zoom.add(5)
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    bed.zoom.add(30)  # ISync: 7035
    before = sync._gap(SESSION)
    assert before is None
    calls = {"n": 0}
    real = bed.zoom.sync

    async def refuse_then_fail(
        session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        calls["n"] += 1
        if calls["n"] == 4:  # ISync (7035), FSync, BSync, then this BSync: refused
            raise SyncTokenInvalid("expired token", status=400, code=300)
        if calls["n"] == 5:  # the FSync of the restart
            raise ZoomTransientError("connection reset", endpoint="sync")
        return await real(session_id, sync_type, count, sync_token)

    bed.zoom.sync = refuse_then_fail  # type: ignore[method-assign]
    with capture_logs() as logs, pytest.raises(ZoomTransientError):
        await sync.incremental(SESSION)
    gap = sync._gap(SESSION)
    assert gap is not None
    assert (gap["cursor"], gap["refused"], gap["newest"]) == (None, 1, None)
    [entry] = [e for e in logs if e["event"] == "gap_cursor_refused"]
    assert (entry["code"], entry["session_id"], entry["refused"]) == (300, SESSION, 1)
    bed.zoom.sync = real  # type: ignore[method-assign]
    result = await sync.incremental(SESSION)
    assert result.caught_up and sync._gap(SESSION) is None
    assert bed.archived_ids() == bed.truth_ids()


async def test_the_refusal_failure_says_what_happened_and_what_to_change(bed: Bed) -> None:
    bed.zoom.add(30)
    bed.zoom.token_life = 0
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    with pytest.raises(ZoomSessionError) as caught:
        await sync.backfill(SESSION, 100, lambda: False)
    assert str(caught.value) == (
        f"the sync cursor was refused {REFUSAL_LIMIT} times in a row (code 300) without the "
        "walk getting further than it had been: Zoom's sync tokens expire before this "
        "daemon's next call comes. The walk starts again from the newest end on the next "
        "try; if this repeats, raise [rate_limits] share or lower [sync] workers, so that "
        "one session's calls follow each other sooner "
        f"(endpoint={ENDPOINT}, session_id={SESSION})"
    )
    assert isinstance(caught.value.__cause__, SyncTokenInvalid)


class LiveTraffic(StepCounting):
    """60 new messages before every step: more than a turn's 8 pages (count 5) can walk."""

    per_step = 60

    async def _step(self, session_id: str, priority: int) -> None:
        self._sync._api.add(self.per_step)  # type: ignore[attr-defined]
        await super()._step(session_id, priority)


class GapTraffic(LiveTraffic):
    """More new messages before every step than a gap step's 50 pages can walk."""

    per_step = 5 * (GAP_PAGES_PER_STEP + 10)


async def test_traffic_that_outruns_every_turn_ends_the_pass_incomplete(bed: Bed) -> None:
    """After each restart the BSync pages bring messages that arrived since the last turn:
    archived, but no depth (the re-walk has not rejoined what the walk held), so the
    refusals add up and the pass ends, saying why (hostile review: before, that news reset
    the count and counted as the step's success, and the pass never ended)."""
    zoom = step_zoom(bed, 150)
    zoom.expire_between_steps = True
    zoom.max_calls = MAX_CALLS
    supervisor, failed = await step_pass(bed, LiveTraffic)
    assert refused_reason(supervisor.incomplete()[SESSION])
    assert len(failed) == FAILURE_LIMIT_ONCE
    assert bed.archived_ids() <= bed.truth_ids()
    walk = bed.session_sync().walk_of(SESSION)
    assert walk.phase is Phase.WALKING and not bed.state.get_session(SESSION).backfill_done  # type: ignore[union-attr]


class InclusiveNoTokenOnOlder:
    """An inclusive lower bound (the covered message repeated), and every page that holds
    anything older than it comes without a token."""

    def __init__(self) -> None:
        self.messages = [make_message(i) for i in range(10)]
        self.asked: list[tuple[str, int]] = []

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: Any = None
    ) -> SyncPage:
        self.asked.append((sync_type, count))
        if len(self.asked) > MAX_CALLS:
            raise RuntimeError(f"still walking after {MAX_CALLS} calls")
        if sync_type != "BSync":
            return SyncPage(messages=[self.messages[-1]], sync_token="t9")
        lo = int(sync_token[1:])
        page = list(reversed(self.messages[max(0, lo - count + 1) : lo + 1]))
        return SyncPage(messages=page, sync_token=None if len(page) > 1 else f"t{lo}")


async def test_a_widened_request_without_token_is_asked_again_at_its_width(bed: Bed) -> None:
    """Hostile review: the page without a token reset the width, the next request (count
    1) came back full of the edge with a token and cleared the no-token streak: the walk
    never moved and never failed."""
    bed.count = 1
    zoom = InclusiveNoTokenOnOlder()
    bed.zoom = bed.listing.zoom = zoom  # type: ignore[assignment]
    supervisor = await bed.run_pass(fast=True)
    assert "without sync_token" in supervisor.incomplete()[SESSION]
    bsyncs = [count for kind, count in zoom.asked if kind == "BSync"]
    assert bsyncs[:2] == [1, 2] and set(bsyncs[2 : 2 + NO_TOKEN_LIMIT]) == {2}


def failing_bsyncs(bed: Bed, fails: Any) -> Any:
    """The scripted Zoom's sync, answering BSync number n (from 1) with a gateway's 502
    when `fails(n)`."""
    real = bed.zoom.sync
    bsyncs = 0

    async def sync(session_id: str, sync_type: str, count: int, sync_token: Any = None) -> Any:
        nonlocal bsyncs
        if sync_type == "BSync":
            bsyncs += 1
            if fails(bsyncs):
                raise ZoomResponseError("502 from a gateway", session_id=session_id)
        return await real(session_id, sync_type, count, sync_token)

    return sync


async def test_a_re_walk_of_archived_messages_with_errors_every_other_turn_completes(
    bed: Bed,
) -> None:
    """A walk over messages already archived (started again, as after the state cache is
    deleted) archives nothing new, yet each turn gets deeper: those turns are successes, or
    FAILURE_LIMIT_ONCE errors spread over a healthy walk would end it incomplete."""
    bed.zoom.add(bed.count * 8 * 10)  # ten turns of 8 pages
    assert (await bed.run_pass(fast=True)).incomplete() == {}
    bed.state.set_meta(f"walk:{SESSION}", Walk().to_json())
    bed.state.save_sync_tokens(SESSION, oldest_token=None, backfill_done=False)
    bed.zoom.sync = failing_bsyncs(bed, lambda n: n % 9 == 5)  # type: ignore[method-assign]
    again = await bed.run_pass(fast=True)
    assert again.incomplete() == {}
    assert bed.session_sync().walk_of(SESSION).phase is Phase.CONFIRMED


async def test_a_long_gap_with_an_error_now_and_then_completes(bed: Bed) -> None:
    """Gap steps that get further are successes: errors spread over a healthy gap fill of
    many steps (one per 60 BSyncs, a step is 50 pages) never add up to FAILURE_LIMIT_ONCE
    in a row, so the pass completes (kills `_settle_incremental` 39, and the idle rule
    ignoring gap steps)."""
    bed.zoom.add(5)
    assert (await bed.run_pass(fast=True)).incomplete() == {}
    bed.zoom.add(bed.count * GAP_PAGES_PER_STEP * 12)  # a gap of 12 steps
    bed.zoom.sync = failing_bsyncs(bed, lambda n: n % 60 == 0)  # type: ignore[method-assign]
    with capture_logs() as logs:
        again = await bed.run_pass(fast=True)
    assert len([e for e in logs if e["event"] == "session_failed"]) > FAILURE_LIMIT_ONCE
    assert again.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids()


async def test_traffic_that_outruns_every_gap_step_ends_the_pass_incomplete(bed: Bed) -> None:
    """The gap fill's twin: after each refused gap cursor the re-walk's BSync pages bring the
    traffic that arrived since; it is no depth until the re-walk rejoins what the gap held
    (hostile review 3: the gap's `rejoined` was neither reset on a restart, nor saved, nor
    read, and no test noticed)."""
    zoom = step_zoom(bed, 5)
    assert (await bed.run_pass(fast=True, supervisor=StepCounting)).incomplete() == {}
    zoom.add(bed.count * (GAP_PAGES_PER_STEP + 10))  # a gap deeper than one step
    zoom.expire_between_steps = True
    zoom.max_calls = len(zoom.calls) + MAX_CALLS
    supervisor, failed = await step_pass(bed, GapTraffic)
    assert refused_reason(supervisor.incomplete()[SESSION])
    assert len(failed) == FAILURE_LIMIT_ONCE
    gap = bed.session_sync()._gap(SESSION)
    assert gap is not None  # open, never closed on a guess
    assert bed.archived_ids() <= bed.truth_ids()


async def test_a_one_second_bulk_send_deeper_than_a_gap_step_closes_when_cursors_expire(
    bed: Bed,
) -> None:
    """Inside one second the frontier cannot move: after each restart only the gap's saved
    `rejoined` lets its news count as depth (kills the gap's per-page save losing it)."""
    zoom = step_zoom(bed, 5)
    assert (await bed.run_pass(fast=True, supervisor=StepCounting)).incomplete() == {}
    start = len(zoom.messages)
    zoom.add(bed.count * (GAP_PAGES_PER_STEP * (REFUSAL_LIMIT + 2)))  # more steps than the limit
    for message in zoom.messages[start:]:
        message["date_time"] = zoom.messages[start]["date_time"]
    zoom.expire_between_steps = True
    zoom.max_calls = len(zoom.calls) + MAX_CALLS
    supervisor, failed = await step_pass(bed)
    assert supervisor.incomplete() == {} and not failed
    assert bed.archived_ids() == bed.truth_ids()
