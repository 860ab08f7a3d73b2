"""The newest end counts as synced only on evidence (issue 14, hostile review): a short ISync
page earns one confirming ISync, the same-second rule is judged in Zoom's clock, and a session
marked gone comes back while the list shows messages we do not hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.errors import SessionGoneError, ZoomSessionError
from archiver.zoom.models import SyncPage
from tests.sync.conftest import SESSION, Bed
from tests.sync.fakezoom import BASE, FakeZoom, make_message


def _at(n: int, moment: datetime) -> dict[str, Any]:
    message = make_message(n)
    message["date_time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return message


async def test_a_short_isync_page_earns_a_confirming_isync(bed: Bed) -> None:
    """Fails before the fix: the short page was "caught up", the second message of the listed
    second stayed upstream and every later pass said complete."""
    bed.zoom.add(3)
    await bed.run_pass(fast=True)
    second = BASE + timedelta(minutes=10)
    bed.zoom.messages += [_at(3, second), _at(4, second)]
    isyncs: list[int] = []

    def short(n: int, kind: str) -> int | None:
        if kind == "ISync":
            isyncs.append(n)
            return 1 if len(isyncs) == 1 else None
        return None

    bed.zoom.short = short
    supervisor = await bed.run_pass(fast=True)
    assert bed.archived_ids() == bed.truth_ids()
    assert supervisor.incomplete() == {}
    # the ISync that brought one message, the confirming one that brought the other, and one
    # that came back empty: only that one is evidence
    assert len(isyncs) == 3
    session = bed.state.get_session(SESSION)
    assert session is not None and session.synced_message_time == second.isoformat()


class LateVisible(FakeZoom):
    """After the `after`-th ISync, one more message of the listed second becomes visible."""

    late: dict[str, Any] | None = None
    after: int = 2

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        page = await super().sync(session_id, sync_type, count, sync_token)
        if sync_type == "ISync" and self.late is not None:
            self.after -= 1
            if self.after == 0:
                self.messages.append(self.late)
        return page


async def test_the_listed_second_is_judged_over_in_zooms_clock(bed: Bed) -> None:
    """Zoom's clock 10 s behind ours (its `Date` says so). Fails before the fix: our clock
    said the listed second was long over, the session was marked synced after an empty ISync
    and the message Zoom showed a moment later was never fetched."""
    zoom = LateVisible()
    bed.zoom = zoom
    bed.listing.zoom = zoom
    bed.listing.clock_offset = timedelta(seconds=-10)
    zoom.add(3)
    await bed.run_pass(fast=True)
    zoom_now = datetime.now(UTC) - timedelta(seconds=10)
    listed = zoom_now.replace(microsecond=0) - timedelta(seconds=5)
    # a full ISync page (count = 5) ending at the listed second, then an empty one
    zoom.messages += [_at(3 + i, listed - timedelta(seconds=4 - i)) for i in range(5)]
    zoom.late = _at(8, listed)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids(), "the late message of the listed second"


async def test_without_a_clock_offset_our_clock_is_zooms(bed: Bed) -> None:
    bed.zoom.add(2)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.zoom_now() - datetime.now(UTC) < timedelta(seconds=1)
    bed.listing.clock_offset = timedelta(minutes=-3)
    assert datetime.now(UTC) - supervisor.zoom_now() > timedelta(minutes=2)


class GoneOnce(FakeZoom):
    gone_left: int = 1

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        if self.gone_left:
            self.gone_left -= 1
            self.calls.append((sync_type, sync_token))
            raise SessionGoneError(
                "session does not exist upstream", status=404, code=12004, session_id=session_id
            )
        return await super().sync(session_id, sync_type, count, sync_token)


async def test_a_gone_session_comes_back_while_the_list_shows_more_than_we_hold(bed: Bed) -> None:
    """Fails before the fix: discovery had raised last_message_time to the listed time before
    the 12004, so "listed after what we knew" never held again, and `incomplete()` left gone
    sessions out: the session's messages were never archived and every pass exited 0."""
    zoom = GoneOnce()
    bed.zoom = zoom
    bed.listing.zoom = zoom
    zoom.add(3)
    # One 12004 while the list shows messages we do not hold is asked once more (4cf1d76):
    # the second answer is normal, so the same pass archives everything.
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids()
    assert [call for call in zoom.calls if call[0] == "FSync"][:2] == [("FSync", None)] * 2


class GoneTwice(GoneOnce):
    gone_left: int = 2


async def test_two_12004s_in_a_row_confirm_gone_for_that_listing(bed: Bed) -> None:
    """The second 12004 confirms: the pass is complete about it, and the next pass neither
    asks again nor calls it incomplete."""
    zoom = GoneTwice()
    bed.zoom = zoom
    bed.listing.zoom = zoom
    zoom.add(3)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert bed.archived_ids() == set()
    calls = len(zoom.calls)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {} and len(zoom.calls) == calls


async def test_a_gone_session_the_list_shows_nothing_new_for_is_complete(bed: Bed) -> None:
    bed.zoom.add(3)
    await bed.run_pass(fast=True)
    bed.state.mark_gone(SESSION, "12004")
    calls = len(bed.zoom.calls)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert len(bed.zoom.calls) == calls


def test_the_client_estimates_zooms_clock_from_date_headers() -> None:
    """The median of recent (Date - our clock): one odd gateway does not move it; a header
    that is absent or not an HTTP date is ignored."""
    from archiver.zoom.client import ZoomClient

    ours = datetime(2025, 3, 10, 12, 0, 0, 400_000, tzinfo=UTC)
    client = ZoomClient(None, None, None, clock=lambda: ours)  # type: ignore[arg-type]
    assert client.clock_offset == timedelta(0)
    for header in ("Mon, 10 Mar 2025 11:59:50 GMT", "Mon, 10 Mar 2025 11:59:50 GMT", None, "x"):
        client.observe_date(header)
    client.observe_date("Mon, 10 Mar 2025 13:00:00 GMT")  # a gateway an hour off
    assert client.clock_offset == timedelta(seconds=-10.4)


class FailsSecondIsync(FakeZoom):
    isyncs: int = 0

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        if sync_type == "ISync":
            self.isyncs += 1
            if self.isyncs == 2:
                self.calls.append((sync_type, sync_token))
                raise ZoomSessionError(
                    "Zoom refused the request: an HTML page", status=403, session_id=session_id
                )
        return await super().sync(session_id, sync_type, count, sync_token)


async def test_a_failed_confirming_isync_is_retried_as_one(bed: Bed) -> None:
    """Found by the completeness bed: the confirming ISync met a 403, and its retry (at the
    same CONFIRM priority) ran as a backfill turn: the session was never marked synced."""
    zoom = FailsSecondIsync()
    bed.zoom = zoom
    bed.listing.zoom = zoom
    zoom.add(3)
    await bed.run_pass(fast=True)
    zoom.add(1)  # one new message: a page that is not full, a confirming ISync due
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert zoom.isyncs == 3  # the news, the refused confirmation, the confirmation again
    session = bed.state.get_session(SESSION)
    assert session is not None and session.synced_message_time == session.last_message_time


async def test_a_short_isync_page_behind_the_list_goes_on_by_isync(bed: Bed) -> None:
    """Found by the completeness bed: a short ISync page that left news behind the listed time
    was taken for an untrustworthy window (FSync and a gap walk, every time) and counted as the
    session's failure; six such steps in a row ended the --once pass incomplete."""
    bed.zoom.add(3)
    await bed.run_pass(fast=True)
    bed.zoom.add(4)
    bed.zoom.short = lambda _n, kind: 1 if kind == "ISync" else None  # every ISync: one message
    calls = len(bed.zoom.calls)
    supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    assert bed.archived_ids() == bed.truth_ids()
    kinds = [kind for kind, _ in bed.zoom.calls[calls:]]
    assert "FSync" not in kinds and set(kinds) == {"ISync"}, kinds
    assert bed.state.get_meta(f"failed:{SESSION}") in (None, "")
