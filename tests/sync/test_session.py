"""SessionSync and the supervisor against one scripted session: each case is a behaviour
Zoom's documentation allows, and each of defects 1-5 of the completeness issue has a case here
that lost messages (or concluded without evidence) on the code before the fix."""

from __future__ import annotations

from datetime import timedelta

import pytest

from archiver.errors import ZoomSessionError, ZoomTransientError
from archiver.sync.supervisor import FAILURE_LIMIT_ONCE
from archiver.sync.walk import Phase
from archiver.zoom.models import SyncPage, parse_time
from tests.sync.conftest import SESSION, Bed


async def test_full_isync_page_with_the_boundary_message_is_followed_by_another(bed: Bed) -> None:
    """Defect 1: the boundary message took a slot of a full ISync page; the newest message
    was left for a next call that never came, and the pass said the session was synced."""
    bed.zoom.add(5)
    await bed.run_pass()
    bed.zoom.add(5)
    bed.zoom.isync_boundary = True
    supervisor = await bed.run_pass()
    assert bed.archived_ids() == bed.truth_ids()
    assert not supervisor.failed_sessions


async def test_a_short_backfill_page_is_not_the_start_of_history(bed: Bed) -> None:
    """Defect 2: one short BSync page ended the backfill for good."""
    bed.zoom.add(23)
    bed.zoom.short = lambda n, kind: 2 if (kind, n) == ("BSync", 1) else None
    await bed.run_pass()
    assert bed.archived_ids() == bed.truth_ids()
    # the walk ended on evidence: its last call was an empty BSync
    kinds = [kind for kind, _ in bed.zoom.calls]
    assert kinds[-1] == "BSync"
    assert bed.session_sync().walk_of(SESSION).phase is Phase.CONFIRMED


async def test_a_short_first_page_earns_one_confirming_call(bed: Bed) -> None:
    bed.zoom.add(3)
    supervisor = await bed.run_pass()
    assert [kind for kind, _ in bed.zoom.calls] == ["FSync", "BSync"]
    assert bed.state.get_session(SESSION).backfill_done  # type: ignore[union-attr]
    assert supervisor.incomplete() == {}


async def test_the_gap_walk_does_not_end_on_a_page_without_token(bed: Bed) -> None:
    """Defect 3: after 7035, a BSync page without sync_token cleared the gap; the messages
    below it and above the old window were never fetched."""
    bed.zoom.add(5)
    await bed.run_pass()
    bed.zoom.add(17)  # more than `count`: ISync answers 7035
    start = len(bed.zoom.calls)
    bed.zoom.no_token = {start + 2}  # ISync (7035), FSync, then this BSync
    await bed.run_pass(fast=True)
    assert bed.archived_ids() == bed.truth_ids()
    assert bed.zoom.calls[start + 3] == bed.zoom.calls[start + 2]  # the same request again


async def test_backfill_finishes_when_cursors_expire_between_turns(bed: Bed) -> None:
    """Defect 4: a refused BSync cursor restarted the walk from FSync, and a session deeper
    than one turn re-walked its newest pages for ever."""
    bed.zoom.add(200)
    bed.zoom.token_life = 20  # requests; between two turns, more than that pass
    sync = bed.session_sync()
    await sync.incremental(SESSION)
    for _ in range(40):
        result = await sync.backfill(SESSION, 8, lambda: False)
        if result.backfill_done:
            break
        bed.zoom.calls.extend([("other", None)] * 30)  # other sessions' requests
    assert result.backfill_done
    assert bed.archived_ids() == bed.truth_ids()


async def test_a_gone_session_comes_back_when_the_list_shows_activity(bed: Bed) -> None:
    """Defect 5 (discovery's part): a session marked gone was skipped for ever."""
    bed.zoom.add(3)
    await bed.run_pass()
    bed.state.mark_gone(SESSION, "404")
    bed.zoom.add(2)
    await bed.run_pass()
    assert bed.archived_ids() == bed.truth_ids()
    assert not bed.state.get_session(SESSION).gone  # type: ignore[union-attr]


async def test_a_gone_session_stays_gone_while_the_list_shows_nothing_new(bed: Bed) -> None:
    bed.zoom.add(3)
    await bed.run_pass()
    bed.state.mark_gone(SESSION, "404")
    calls = len(bed.zoom.calls)
    await bed.run_pass()
    assert len(bed.zoom.calls) == calls
    assert bed.state.get_session(SESSION).gone  # type: ignore[union-attr]


async def test_isync_sends_the_token_of_the_page_before(bed: Bed) -> None:
    """Mutation-test survivor: the ISync token never saved after a page (nothing lost, so
    end-to-end tests passed, while every poll repeated work)."""
    bed.zoom.add(5)
    await bed.run_pass()
    for _ in range(3):
        bed.zoom.add(2)
        await bed.run_pass()
    issued = {number: token for token, (_lo, _hi, number) in bed.zoom._windows.items()}
    isyncs = [i for i, (kind, _) in enumerate(bed.zoom.calls) if kind == "ISync"]
    # each pass: the ISync that brings the two messages (a page that is not full), then the
    # confirming ISync from its token (short pages prove nothing), which comes back empty
    assert len(isyncs) == 6
    for i in isyncs:
        # the newest end's token is the one the last FSync/ISync page before it carried
        before = max(j for j, (kind, _) in enumerate(bed.zoom.calls[:i]) if kind != "BSync")
        assert bed.zoom.calls[i][1] == issued[before]


async def test_pages_without_token_five_times_fail_the_session_never_done(bed: Bed) -> None:
    bed.zoom.add(12)
    bed.zoom.no_token = set(range(1, 1000))  # every page after the first FSync
    supervisor = await bed.run_pass(fast=True)
    assert SESSION in supervisor.incomplete()
    assert not bed.state.get_session(SESSION).backfill_done  # type: ignore[union-attr]
    bed.zoom.no_token = set()
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids()


async def test_a_pass_that_cannot_reach_the_listed_time_is_incomplete(bed: Bed) -> None:
    bed.zoom.add(4)
    newest = parse_time(bed.zoom.messages[-1]["date_time"])
    assert newest is not None

    async def listed_later(**_kwargs: object) -> object:
        from archiver.zoom.models import SessionInfo, SessionPage

        return SessionPage([SessionInfo(SESSION, "user", newest + timedelta(hours=1))], None)

    bed.listing.list_sessions = listed_later  # type: ignore[method-assign]
    supervisor = await bed.run_pass(fast=True)
    reason = supervisor.incomplete()[SESSION]
    assert "2024-01-01T01:03:00" in reason and "reached only 2024-01-01T00:03:00" in reason
    assert reason.endswith(f"(session_id={SESSION})")


async def test_a_listed_session_whose_sync_returns_nothing_is_incomplete(bed: Bed) -> None:
    """The list shows a message; every sync page comes back empty: nothing reached."""

    async def listed(**_kwargs: object) -> object:
        from archiver.zoom.models import SessionInfo, SessionPage

        return SessionPage([SessionInfo(SESSION, "user", parse_time("2024-01-01T00:00:00Z"))], None)

    bed.listing.list_sessions = listed  # type: ignore[method-assign]
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.failed_sessions[SESSION] == (
        "the list shows a message at 2024-01-01T00:00:00+00:00 but the sync windows reached "
        f"only nothing (session_id={SESSION})"
    )


async def test_a_session_error_is_retried_not_fatal(bed: Bed) -> None:
    bed.zoom.add(6)
    real_sync = bed.zoom.sync
    errors = [ZoomSessionError("403", status=403), ZoomTransientError("502", status=502)]

    async def flaky(*args: object, **kwargs: object) -> object:
        if errors:
            raise errors.pop(0)
        return await real_sync(*args, **kwargs)  # type: ignore[arg-type]

    bed.zoom.sync = flaky  # type: ignore[method-assign]
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids()
    # Counted by kind for the progress line and zsa_sync_failures; cleared from `status`.
    assert supervisor.progress.failures == {"ZoomSessionError": 1, "ZoomTransientError": 1}
    assert not bed.state.get_meta(f"failed:{SESSION}")


async def test_a_session_failing_every_attempt_keeps_its_last_reason_for_status(
    bed: Bed,
) -> None:
    bed.zoom.add(6)
    long = "x" * 600

    async def broken(*_args: object, **_kwargs: object) -> object:
        raise ZoomSessionError(long, status=403)

    bed.zoom.sync = broken  # type: ignore[method-assign]
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.progress.failures == {"ZoomSessionError": FAILURE_LIMIT_ONCE}
    assert bed.state.get_meta(f"failed:{SESSION}") == str(ZoomSessionError(long, status=403))[:500]
    assert SESSION in supervisor.failed_sessions


async def test_discovery_failure_makes_the_pass_incomplete(bed: Bed) -> None:
    bed.listing.error = ZoomSessionError("403 on the list", status=403)
    supervisor = await bed.run_pass(fast=True)
    assert "<discovery>" in supervisor.incomplete()


async def test_status_and_metrics_show_an_incomplete_session_and_why(bed: Bed) -> None:
    from archiver.ops.metrics import ArchiverCollector, Telemetry
    from archiver.ops.status import read_status, render

    bed.zoom.add(12)
    bed.zoom.no_token = set(range(1, 1000))
    supervisor = await bed.run_pass(fast=True)
    report = read_status(bed.config)
    (row,) = report.sessions
    assert not row.complete and not row.backfilled
    assert row.backfill.startswith("failed: ") and "without sync_token" in row.backfill
    assert row.complete_through == bed.zoom.messages[-1]["date_time"].replace("Z", "+00:00")
    assert report.sessions_incomplete == 1
    text = render(report)
    assert f"  {SESSION}  complete through " in text and "without sync_token" in text
    telemetry = Telemetry(poll_interval=1)
    telemetry.supervisor = supervisor
    samples = {
        sample.name: sample.value
        for family in ArchiverCollector(telemetry).collect()
        for sample in family.samples
    }
    assert samples["zsa_sessions_incomplete"] == 1
    bed.zoom.no_token = set()
    supervisor = await bed.run_pass(fast=True)
    report = read_status(bed.config)
    assert report.sessions_incomplete == 0 and report.sessions[0].backfill == "confirmed start"
    telemetry.supervisor = supervisor
    samples = {s.name: s.value for f in ArchiverCollector(telemetry).collect() for s in f.samples}
    assert samples["zsa_sessions_incomplete"] == 0


async def test_a_confirm_turn_whose_cursor_expired_still_makes_the_confirming_call(
    bed: Bed,
) -> None:
    """Found by the model test: the confirming BSync waits behind all other work, so its
    cursor is often refused; the turn walked down again to the short page and stopped there,
    before the confirming call, for ever."""
    bed.zoom.add(12)
    bed.zoom.token_life = 5
    bed.zoom.short = lambda _n, kind: 1 if kind == "BSync" else None
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    for _ in range(30):
        result = await sync.backfill(SESSION, 8, lambda: False)
        if result.phase is Phase.PROBABLE_START:
            break
        bed.zoom.calls.extend([("other", None)] * 10)
    bed.zoom.short = lambda _n, _kind: None
    for _ in range(3):
        assert result.phase is Phase.PROBABLE_START
        bed.zoom.calls.extend([("other", None)] * 10)  # the cursor expires meanwhile
        result = await sync.backfill(SESSION, 8, lambda: False, confirm=True)
        if result.backfill_done:
            break
    assert result.backfill_done
    assert bed.archived_ids() == bed.truth_ids()


async def test_isync_pages_of_only_the_boundary_ask_for_more_at_count_1(bed: Bed) -> None:
    """The boundary message may take a slot of an ISync page: with count = 1 it took the only
    one, every ISync came back full of it, and the pass never ended (hostile review)."""
    bed.count = 1
    bed.zoom.add(3)
    assert (await bed.run_pass(fast=True)).incomplete() == {}
    bed.zoom.add(1)  # one new message: no 7035, ISync is the way
    bed.zoom.isync_boundary = True
    start = len(bed.zoom.calls)
    bed.zoom.max_calls = start + 3000
    again = await bed.run_pass(fast=True)
    assert again.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids()
    # full page of the boundary, then the same token for 2: the boundary and the new one
    assert [kind for kind, _ in bed.zoom.calls[start : start + 2]] == ["ISync", "ISync"]


async def test_full_isync_pages_with_nothing_new_at_zoom_s_maximum_fail_the_step(
    bed: Bed,
) -> None:
    bed.zoom.add(3)
    sync = bed.session_sync()
    await sync.incremental(SESSION)
    asked: list[int] = []
    newest = bed.zoom.messages[-1]

    async def repeats(session_id: str, sync_type: str, count: int, token: object = None) -> object:
        asked.append(count)
        return SyncPage(messages=[newest] * count, sync_token="same")

    bed.zoom.sync = repeats  # type: ignore[method-assign,assignment]
    with pytest.raises(ZoomSessionError, match="count=250, Zoom's maximum"):
        await sync.incremental(SESSION)
    assert asked == [5, 10, 20, 40, 80, 160, 250]


async def test_news_between_two_quiet_isync_answers_means_they_are_not_in_a_row(
    bed: Bed,
) -> None:
    """A short ISync page of only the boundary is caught up only as the second such answer in
    a row: a page with news between two of them starts the count again."""
    bed.zoom.add(3)
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)  # FSync
    bed.zoom.isync_boundary = True
    first = await sync.incremental(SESSION)  # [boundary]: short, quiet, one alone
    assert not first.caught_up
    bed.zoom.add(4)  # [boundary + 4 new]: full, news; then [boundary]: quiet, but after news
    second = await sync.incremental(SESSION)
    assert second.new == 4 and not second.caught_up
    third = await sync.incremental(SESSION)  # [boundary] again: the second quiet in a row
    assert third.caught_up


async def test_a_full_isync_page_of_messages_webhooks_archived_is_no_failure(bed: Bed) -> None:
    """Nothing new on a full page because the webhooks were first: the token moved, so it is
    no sign of a Zoom repeating itself (hostile review: at count 250 the step failed, with a
    reason that blamed Zoom)."""
    bed.count = 250
    bed.zoom.add(3)
    sync = bed.session_sync(pause=lambda _n: 0.0)
    await sync.incremental(SESSION)
    start = len(bed.zoom.messages)
    bed.zoom.add(250)
    await bed.writer.append_messages(SESSION, bed.zoom.messages[start:], "webhook")
    result = await sync.incremental(SESSION)
    assert result.new == 0 and result.caught_up
    assert bed.archived_ids() == bed.truth_ids()
