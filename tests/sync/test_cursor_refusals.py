"""Sync tokens that expire before the next call can come (Zoom's token lifetime is
undocumented; calls are spaced by the shared rate budget).

Each refused cursor restarts the walk from the newest end, whose next cursor is refused
again: before the fix, `run --once` re-walked the newest pages for ever (the simulator with
`token_expiry = 0.01` and a 5% rate share archived 50 of 147 messages in 240 s and never
ended). Now `REFUSAL_LIMIT` restarts that never get past the walk's frontier fail the step
with the reason and the fix, the pass ends incomplete, and nothing archived is lost.
"""

from __future__ import annotations

from structlog.testing import capture_logs

from archiver.errors import SyncTokenInvalid
from archiver.sync.supervisor import FAILURE_LIMIT_ONCE
from archiver.sync.walk import REFUSAL_LIMIT, Phase
from archiver.zoom.models import SyncPage
from tests.sync.conftest import SESSION, Bed

# Before the fix a pass never ended: a walk that never ends fails instead of hanging.
MAX_CALLS = 2000


def refused_reason(text: str) -> bool:
    return (
        f"refused {REFUSAL_LIMIT} times in a row" in text
        and "[rate_limits] share" in text
        and "[sync] workers" in text
    )


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
    # Every other BSync that would reach deeper than any answered before is refused: after
    # each restart the re-walk reaches that depth again and is answered, a page further.
    answered: set[int] = set()
    deeper = 0
    real = bed.zoom.sync

    async def refuse_every_other_new_depth(
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

    bed.zoom.sync = refuse_every_other_new_depth  # type: ignore[method-assign]
    with capture_logs() as logs:
        result = await sync.backfill(SESSION, 100, lambda: False, confirm=True)
    refused = [e["refused"] for e in logs if e["event"] == "walk_cursor_refused"]
    assert len(refused) > REFUSAL_LIMIT  # more refusals than the limit in all
    assert set(refused) == {1}  # but never two without progress between them
    assert result.backfill_done
    assert bed.archived_ids() == bed.truth_ids()
