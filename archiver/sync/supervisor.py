"""The supervisor: discovery, a priority queue of session work, bounded workers, shutdown.

Incremental work (new messages in active sessions) always goes before backfill, and backfill
runs a few pages at a time before going back in the queue, so a large backfill never delays
new messages. Discovery walks the account's session list in calendar-month windows from
`history_start` once (resumable), then each poll lists only the window since the watermark
minus a lookback: an idle account costs a few list calls per poll, not one per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from archiver.config import Config
from archiver.errors import StorageError, ZoomAuthError, ZoomError
from archiver.ops.logs import get_logger
from archiver.sync.session import SessionSync, StepResult
from archiver.sync.walk import Phase
from archiver.sync.windows import day_start, month_windows
from archiver.zoom.client import ZoomClient
from archiver.zoom.models import parse_time
from archiver.zoom.ratelimit import BudgetExhausted

# Queue priorities: new messages first, then walks backwards, then the confirming BSync of a
# walk whose last page was short (the lowest: it never delays anything else).
INCREMENTAL, BACKFILL, CONFIRM = 0, 1, 2
BACKFILL_PAGES_PER_TURN = 8
# Failed attempts in a row per session in --once before the pass is declared incomplete.
FAILURE_LIMIT_ONCE = 6
# --once parks a session whose budget label is paused for at most this long; a longer pause
# (the daily cap) ends the pass incomplete, saying so, instead of waiting for hours.
PARK_LIMIT_ONCE = 120.0
# State meta key: the listing for which two 12004 answers in a row confirmed a session gone.
GONE_CONFIRMED = "gone_confirmed:"
# Zoom's clock may run ahead of ours: every list window reaches this far past our "now", so
# a message Zoom stamped a little "in the future" is listed by the pass that starts after it
# exists. The watermark stays at our own start time; the lookback covers the other side.
CLOCK_SKEW = timedelta(minutes=5)
# The session list gives a session's last message time to the second. A sync that began
# before that second was over (in Zoom's time, estimated from the `Date` of its answers:
# `ZoomClient.clock_offset`), plus this margin for a message Zoom makes visible a few seconds
# after its `date_time`, may have missed a message of the same second: the session stays
# "needs sync" until a confirming ISync made later comes back with nothing new.
SAME_SECOND_MARGIN = timedelta(seconds=5)
META_WALKED_TO = "discovery_walked_to"
META_WATERMARK = "discovery_watermark"
# The history_start discovery has walked from: a config moved earlier later is walked back to.
META_HISTORY_FROM = "discovery_history_from"
# Windows to list again at the next poll: the list kept moving while they were paged.
META_RELIST = "discovery_relist"
# Zoom documents only an opaque next_page_token: if it pages by offset, a session that moves
# out of a window while it is paged shifts the rest up and one is never listed. A window that
# came in more than one page and listed a session which has moved since (its time outside the
# window, or another window showed it at another time) is listed again, up to this many
# rounds per poll; what still moves then is saved and listed again at the next poll.
RELIST_ROUNDS = 3
Window = tuple[datetime, datetime]


@dataclass
class Progress:
    """Counters the progress display, metrics and status read."""

    sessions_discovered: int = 0
    sessions_done: int = 0
    messages_new: int = 0
    messages_changed: int = 0
    pages: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    last_poll_at: float | None = None
    discovery_complete: bool = False


class Supervisor:
    def __init__(
        self,
        config: Config,
        client: ZoomClient,
        state: Any,
        session_sync: SessionSync,
        *,
        once: bool,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        idle_check: Callable[[], bool] = lambda: True,
        backoff: Callable[[int], float] | None = None,
        delay: Callable[[float], float] | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._state = state
        self._sync = session_sync
        self._once = once
        self._now = now
        self._idle_check = idle_check  # e.g. "download queue drained", for --once
        # Seconds before a failed session's attempt n (1, 2, ...) is tried again.
        self._backoff = backoff or ((lambda n: 0.5 * n) if once else (lambda n: min(300.0, 2.0**n)))
        # Real seconds to wait for `s` seconds to pass on `now`'s clock (a test on a virtual
        # clock advances it and answers 0).
        self._delay = delay or (lambda seconds: seconds)
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._queued: dict[str, int] = {}
        self._busy: set[str] = set()
        self._again: dict[str, int] = {}
        self._counter = itertools.count()
        # Walks backwards go depth-first: a session keeps the place in the backfill queue it
        # got first, so the few walks under way are finished before others start and their
        # turns lie close together (a BSync cursor lives for an undocumented while).
        self._tickets: dict[str, int] = {}
        # Sessions not known to be complete (listed time reached, walk ended on evidence),
        # kept up to date per step for metrics; `incomplete()` re-reads the state.
        self.incomplete_sessions: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._retrying: dict[str, int] = {}  # session -> retries scheduled (call_later)
        # Windows whose last listing named a session twice (on two pages) or at two times: the
        # offset paging shifted under us (a session moved within its own window).
        self._shifted: set[Window] = set()
        self.failed_sessions: dict[str, str] = {}
        # Sessions owed a confirming ISync (CONFIRM priority) -> Zoom time it is due at.
        self._isync_due: dict[str, datetime] = {}
        # Sessions answered 12004 once while listed beyond what we hold -> that listing.
        self._gone_once: dict[str, str] = {}
        self.progress = Progress()
        self._stop = asyncio.Event()
        self._fatal: BaseException | None = None
        self._log = get_logger(component="supervisor")

    # --- queue ----------------------------------------------------------------------------

    def enqueue(self, session_id: str, priority: int) -> None:
        if session_id in self._busy:
            self._again[session_id] = min(priority, self._again.get(session_id, priority))
            return
        if self._queued.get(session_id, 99) <= priority:
            return
        self._queued[session_id] = priority
        order = next(self._counter)
        if priority == BACKFILL:
            order = self._tickets.setdefault(session_id, order)
        self._queue.put_nowait((priority, order, session_id))

    @property
    def pending(self) -> int:
        return len(self._queued) + len(self._busy)

    def incomplete(self) -> dict[str, str]:
        """What keeps this pass from being complete: session id (or `<discovery>`) -> why.
        Empty only when every known session that is not gone upstream is synced to the time
        the list gave and its walk back ended on evidence (DESIGN.md, invariant 8)."""
        reasons = dict(self.failed_sessions)
        for session in self._state.sessions(include_gone=True):
            if session.session_id not in reasons:
                why = self._why_incomplete(session)
                if why:
                    reasons[session.session_id] = why
        return reasons

    def _why_incomplete(self, session: Any) -> str | None:
        sid = session.session_id
        if session.gone:
            return (
                f"marked gone (Zoom code 12004) but the list shows a message at "
                f"{session.last_message_time}, after what is held "
                f"({session.synced_message_time or 'nothing'})"
                if _listed_after_held(session) and not self._gone_confirmed(session)
                else None
            )
        if (
            session.synced_message_time is None
            or (session.last_message_time or "") > session.synced_message_time
        ):
            reached = self._sync.synced_to(sid)
            if sid in self._isync_due:
                return (
                    f"confirming ISync for the listed time {session.last_message_time} not "
                    f"done (due {self._isync_due[sid].isoformat()}, Zoom time)"
                )
            return (
                f"not synced to the listed time {session.last_message_time} "
                f"(sync reached {reached.isoformat() if reached else 'nothing yet'})"
            )
        if self._state.get_meta(f"gap:{sid}"):
            return "gap fill after 7035/300 unfinished"
        phase = self._sync.walk_of(sid).phase
        if phase is not Phase.CONFIRMED:
            return {
                Phase.PROBABLE_START: "backfill probably at the start; confirming BSync not done",
                Phase.NO_TOKEN: "backfill stuck on pages without sync_token",
            }.get(phase, "backfill walking")
        return None

    def pending_backfill(self) -> int:
        return sum(1 for _ in self._state.sessions(backfill_done=False))

    # --- main loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set (daemon) or one complete pass is done (--once)."""
        self._stop = stop
        self._requeue_unfinished()
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(self._worker(n)) for n in range(self._config.sync.workers)]
            discovery = group.create_task(self._discovery_loop())
            await self._wait_until_done(discovery)
            for task in [*workers, discovery]:
                task.cancel()
        if self._fatal is not None:
            raise self._fatal

    async def _wait_until_done(self, discovery: asyncio.Task[None]) -> None:
        if not self._once:
            # The daemon only ends when told (a fatal error sets the same event; a failing
            # child task cancels this one through the TaskGroup): no need to poll.
            await self._stop.wait()
            return
        while not self._stop.is_set() and self._fatal is None:
            if (
                self._once
                and discovery.done()
                and not self._queued
                and not self._busy
                and not self._retrying
                and self._idle_check()
            ):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.05)

    def _requeue_unfinished(self) -> None:
        for session in self._state.sessions(needs_sync=True):
            self.enqueue(session.session_id, INCREMENTAL)
        for session in self._state.sessions():
            sid = session.session_id
            if self._state.get_meta(f"gap:{sid}"):
                self.enqueue(sid, INCREMENTAL)
            else:
                self._enqueue_walk(sid, self._sync.walk_of(sid).phase)
            if self._why_incomplete(session):
                self.incomplete_sessions.add(sid)
        for session_id in self._config.sync.pinned_sessions:
            self.enqueue(session_id, INCREMENTAL)

    def _enqueue_walk(self, session_id: str, phase: Phase | None) -> None:
        if phase is Phase.PROBABLE_START:
            self.enqueue(session_id, CONFIRM)
        elif phase in (Phase.WALKING, Phase.NO_TOKEN):
            self.enqueue(session_id, BACKFILL)

    # --- discovery ------------------------------------------------------------------------

    async def _discovery_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await self._discover_once()
                self.progress.last_poll_at = time.time()
                self.progress.discovery_complete = True
                self.failed_sessions.pop("<discovery>", None)
                failures = 0
                unsettled = json.loads(self._state.get_meta(META_RELIST) or "[]")
                if self._once and unsettled:
                    self.failed_sessions["<discovery>"] = (
                        f"the session list kept moving while {len(unsettled)} month windows "
                        f"were paged ({RELIST_ROUNDS} rounds); the next pass lists them again"
                    )
            except ZoomAuthError:
                raise
            except ZoomError as exc:
                failures += 1
                kind = type(exc).__name__
                self.progress.failures[kind] = self.progress.failures.get(kind, 0) + 1
                self._log.error("discovery_failed", error=str(exc), attempt=failures)
                if self._once and failures >= FAILURE_LIMIT_ONCE:
                    self.failed_sessions["<discovery>"] = str(exc)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self._backoff(failures))
                continue
            if self._once:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._config.sync.poll_interval)
            for session_id in self._config.sync.pinned_sessions:
                self.enqueue(session_id, INCREMENTAL)

    async def _discover_once(self) -> None:
        # Zoom's time: the list's windows and the watermark are in its clock. The first poll
        # may begin before any answer told us the offset: the watermark is set from the
        # offset known at the end (the poll's own answers), never later than its start.
        ours = self._now()
        started = self.zoom_now().replace(microsecond=0)
        walked_to = self._state.get_meta(META_WALKED_TO)
        watermark = self._state.get_meta(META_WATERMARK)
        seen: list[tuple[Window, dict[str, str]]] = []
        for raw in json.loads(self._state.get_meta(META_RELIST) or "[]"):
            window = (datetime.fromisoformat(raw[0]), datetime.fromisoformat(raw[1]))
            seen.append((window, await self._list_window(*window)))
        wanted_from = self._config.sync.history_start_date
        if watermark is None:
            # First walk (resumable): every month from history_start to now.
            self._state.set_meta(META_HISTORY_FROM, wanted_from.isoformat())
            begin = day_start(wanted_from)
            if walked_to:
                begin = datetime.fromisoformat(walked_to) + timedelta(seconds=1)
            for window in month_windows(begin, started + CLOCK_SKEW):
                if self._stop.is_set():
                    return
                seen.append((window, await self._list_window(*window)))
                # Never past our own start: a resumed walk must list from there on again.
                self._state.set_meta(META_WALKED_TO, min(window[1], started).isoformat())
        else:
            walked_from = self._state.get_meta(META_HISTORY_FROM)
            if walked_from is None:  # an archive from before the key: walked from this one
                walked_from = wanted_from.isoformat()
                self._state.set_meta(META_HISTORY_FROM, walked_from)
            history_from = date.fromisoformat(walked_from)
            if wanted_from < history_from:
                # history_start moved earlier since the first walk: walk the months between
                # (resumable: the key moves only once they are all listed).
                self._log.info(
                    "discovery_history_extended",
                    start=wanted_from.isoformat(),
                    was=history_from.isoformat(),
                )
                older = month_windows(
                    day_start(wanted_from), day_start(history_from) - timedelta(seconds=1)
                )
                for window in older:
                    if self._stop.is_set():
                        return
                    seen.append((window, await self._list_window(*window)))
                self._state.set_meta(META_HISTORY_FROM, wanted_from.isoformat())
            # Even with `lookback = 0` the seconds before the watermark in which a message may
            # still have been invisible (SAME_SECOND_MARGIN) are listed again.
            lookback = max(timedelta(seconds=self._config.sync.lookback), SAME_SECOND_MARGIN)
            since = datetime.fromisoformat(watermark) - lookback
            for window in month_windows(since, started + CLOCK_SKEW):
                if self._stop.is_set():
                    return
                seen.append((window, await self._list_window(*window)))
        await self._settle_windows(seen)
        self._state.set_meta(META_WATERMARK, self._poll_mark(ours, started).isoformat())

    async def _settle_windows(self, seen: list[tuple[Window, dict[str, str]]]) -> None:
        """List again every window that listed a session which moved since (see
        RELIST_ROUNDS); the windows still moving after the last round are saved for the next
        poll (and a --once pass says so)."""
        for round_number in range(1, RELIST_ROUNDS + 1):
            moved = [window for window, rows in seen if self._moved(window, rows)]
            if not moved:
                self._state.set_meta(META_RELIST, "")
                return
            self._log.info("discovery_relist", windows=len(moved), round=round_number)
            seen = []
            for window in moved:
                if self._stop.is_set():
                    return
                seen.append((window, await self._list_window(*window)))
        still = [window for window, rows in seen if self._moved(window, rows)]
        if still:
            self._log.warning("discovery_unsettled", windows=len(still))
        self._state.set_meta(
            META_RELIST,
            json.dumps([[a.isoformat(), b.isoformat()] for a, b in still]) if still else "",
        )

    def _moved(self, window: Window, rows: dict[str, str]) -> bool:
        """Whether a session `window` listed has left it or shows another time by now, or
        the listing itself named a session twice (on two pages, or at two times)."""
        if window in self._shifted:
            return True
        for session_id, listed in rows.items():
            moment = parse_time(listed)
            known = self._state.get_session(session_id)
            if known is not None and known.last_message_time not in (None, listed):
                return True
            if moment is not None and not window[0] <= moment.replace(microsecond=0) <= window[1]:
                return True
        return False

    def _poll_mark(self, ours: datetime, started: datetime) -> datetime:
        """The watermark of a poll that began at `ours` (our clock), `started` (Zoom's as then
        estimated): the earlier of that and the start in Zoom's clock as estimated now."""
        now_offset = self.zoom_now() - self._now()
        return min(started, (ours + now_offset).replace(microsecond=0))

    async def _list_window(self, start: datetime, end: datetime) -> dict[str, str]:
        """List one window, page by page; returns session id -> the time it gave, or {} when
        it came in one page (a single page cannot have shifted under us)."""
        rows: dict[str, str] = {}
        first_page: dict[str, int] = {}  # session id -> the page that first listed it
        shifted = False
        page_token: str | None = None
        pages = 0
        self._shifted.discard((start, end))
        while True:
            pages += 1
            page = await self._client.list_sessions(
                start=start,
                end=end,
                session_type=self._config.sync.session_type,
                page_token=page_token,
            )
            for info in page.sessions:
                known = self._state.get_session(info.session_id)
                listed = info.last_access_time.isoformat() if info.last_access_time else None
                if known is not None and known.gone:
                    # Gone (12004) until the list shows a message newer than what we hold
                    # (not than what an earlier list said: discovery raised that already).
                    if listed is None or (known.synced_message_time or "") >= listed:
                        continue
                    if listed == known.last_message_time and self._gone_confirmed(known):
                        continue  # two 12004s in a row already answered this listing
                    self._log.warning("session_back", session_id=info.session_id, listed=listed)
                    self._state.mark_back(info.session_id)
                if known is None:
                    self.progress.sessions_discovered += 1
                # Persist what the list says before the watermark moves on; the session stays
                # "needs sync" in the state until an incremental step completes (mark_synced).
                self._state.upsert_session(
                    info.session_id, session_type=info.session_type, last_message_time=listed
                )
                # Listed again on a later page, or at another time: the rows moved under the
                # offset paging (one session moved within the window), so another may have
                # been skipped. Evidence kept: the window is listed again.
                page_seen = first_page.setdefault(info.session_id, pages)
                previous = rows.get(info.session_id)
                if page_seen != pages or (listed is not None and previous not in (None, listed)):
                    shifted = True
                if listed is not None:
                    rows[info.session_id] = max(listed, previous or listed)
                synced = known.synced_message_time if known is not None else None
                if synced is None or listed is None or listed > synced:
                    self.enqueue(info.session_id, INCREMENTAL)
            page_token = page.next_page_token
            if not page_token:
                if pages == 1:
                    return {}
                if shifted:
                    self._log.info("discovery_list_shifted", start=start.isoformat())
                    self._shifted.add((start, end))
                return rows

    # --- workers --------------------------------------------------------------------------

    async def _worker(self, number: int) -> None:
        while True:
            priority, _, session_id = await self._queue.get()
            if self._queued.get(session_id) != priority:
                continue  # superseded by a higher-priority entry
            del self._queued[session_id]
            if self._stop.is_set():
                continue
            self._busy.add(session_id)
            try:
                await self._step(session_id, priority)
            finally:
                self._busy.discard(session_id)
                again = self._again.pop(session_id, None)
                if again is not None:
                    self.enqueue(session_id, again)

    async def _step(self, session_id: str, priority: int) -> None:
        log = self._log.bind(session_id=session_id)
        before = self._state.get_session(session_id)
        listed_at_start = before.last_message_time if before is not None else None
        began = self.zoom_now()
        # A confirming ISync is an incremental step queued behind everything else; it stays
        # owed (a failed attempt is retried as one) until the session is marked synced.
        incremental = priority == INCREMENTAL or (
            priority == CONFIRM and session_id in self._isync_due
        )
        try:
            if incremental:
                result = await self._sync.incremental(session_id, parse_time(listed_at_start))
            else:
                result = await self._sync.backfill(
                    session_id,
                    BACKFILL_PAGES_PER_TURN,
                    self._stop.is_set,
                    confirm=priority == CONFIRM,
                )
        except (StorageError, ZoomAuthError) as exc:
            # The archive cannot take writes, or the account's credentials are refused:
            # stop everything rather than lose data or hammer the token endpoint.
            self._fatal = exc
            self._stop.set()
            return
        except BudgetExhausted as exc:
            # Not the session's fault: park it until the label's budget is back.
            log.warning("session_parked", label=exc.label, resume_in=round(exc.wait))
            if self._once and exc.wait > PARK_LIMIT_ONCE:
                self.failed_sessions[session_id] = str(exc)
                self.incomplete_sessions.add(session_id)
                return
            self._retry_later(session_id, priority, exc.wait)
            return
        except ZoomError as exc:
            self._record_failure(session_id, priority, exc)
            log.error("session_failed", error=str(exc), error_type=type(exc).__name__)
            return
        self._account(result)
        if result.gone:
            self._after_gone(session_id)
            return
        settled = not incremental or self._settle_incremental(
            session_id, listed_at_start, began, result
        )
        # A step that left its walk (or gap) open without getting any further is no
        # progress, whatever news it archived on the way (traffic that arrived since the
        # last turn): it does not wipe the failures counted before it, so that a walk
        # refused at every turn still ends a --once pass (FAILURE_LIMIT_ONCE).
        idle = not result.advanced and (
            result.gap_open or (not incremental and not result.backfill_done)
        )
        if settled and not idle:
            self._succeeded(session_id)
        self._enqueue_walk(session_id, result.phase)
        session = self._state.get_session(session_id)
        if session is not None and self._why_incomplete(session) is None:
            if session_id in self.incomplete_sessions:
                self.progress.sessions_done += 1
            self.incomplete_sessions.discard(session_id)
        else:
            self.incomplete_sessions.add(session_id)

    def _after_gone(self, session_id: str) -> None:
        """A 12004 while the list shows messages we do not hold: one answer may be Zoom's
        lag (a session just created), so the session is asked once more after a pause; a
        second 12004 in a row for the same listing confirms it gone (kept in the state, so
        later passes do not stay incomplete over a session Zoom says does not exist)."""
        self._succeeded(session_id)
        self._isync_due.pop(session_id, None)
        gone = self._state.get_session(session_id)
        if gone is not None and _listed_after_held(gone) and not self._gone_confirmed(gone):
            listed = gone.last_message_time or ""
            if self._gone_once.get(session_id) == listed:
                self._state.set_meta(f"{GONE_CONFIRMED}{session_id}", listed)
                self._log.warning("session_gone_confirmed", session_id=session_id, listed=listed)
            else:
                self._gone_once[session_id] = listed
                self._state.mark_back(session_id)
                self._retry_later(session_id, INCREMENTAL, self._backoff(1))
        gone = self._state.get_session(session_id)
        if gone is not None and self._why_incomplete(gone):
            self.incomplete_sessions.add(session_id)  # the list shows more than we hold
        else:
            self.incomplete_sessions.discard(session_id)

    def _gone_confirmed(self, session: Any) -> bool:
        """Two 12004 answers in a row came for the listing the state holds now."""
        confirmed = self._state.get_meta(f"{GONE_CONFIRMED}{session.session_id}")
        return bool(confirmed) and confirmed == session.last_message_time

    def _settle_incremental(
        self, session_id: str, listed: str | None, began: datetime, result: StepResult
    ) -> bool:
        """Mark the session synced to the listed time, on evidence only: the sync windows
        reached that time, and the sync began after that second was over. False: the step
        failed to reach it (counted as the session's failure)."""
        if result.gap_open:
            # The gap walk's turn is over: queued again (behind the other sessions' steps).
            self.enqueue(session_id, INCREMENTAL)
            return True
        listed_time = parse_time(listed)
        reached = result.synced_to
        behind = listed_time is not None and (
            reached is None or reached.replace(microsecond=0) < listed_time.replace(microsecond=0)
        )
        if behind and result.caught_up:
            self._record_failure(
                session_id,
                INCREMENTAL,
                ZoomError(
                    f"the list shows a message at {listed} but the sync windows reached only "
                    f"{reached.isoformat() if reached else 'nothing'}",
                    session_id=session_id,
                ),
            )
            return False
        if behind:
            # A page that was not full, with news, and the list shows more: go on at once.
            self.enqueue(session_id, INCREMENTAL)
            return True
        if not result.caught_up or not _second_is_over(listed, began):
            # The last ISync page was not full but brought news (a short page proves nothing),
            # or another message of the listed second may still come: one confirming ISync,
            # behind all other work, once the second is over in Zoom's time.
            due = _due(listed, began)
            self._isync_due[session_id] = due
            wait = (due - self.zoom_now()).total_seconds()
            if self._once and wait > PARK_LIMIT_ONCE:
                self.failed_sessions[session_id] = (
                    f"the list time {listed} lies {round(wait)} s ahead of Zoom's clock; "
                    "the confirming ISync is left for a later pass"
                )
                return True
            self._retry_later(session_id, CONFIRM, self._delay(max(0.0, wait)))
            return True
        self._isync_due.pop(session_id, None)
        self._state.mark_synced(session_id, listed)
        return True

    def zoom_now(self) -> datetime:
        """Zoom's time now: our clock plus the offset the client saw in Zoom's `Date`s."""
        offset = getattr(self._client, "clock_offset", None)
        now = self._now()
        return now + offset if isinstance(offset, timedelta) else now

    def _account(self, result: StepResult) -> None:
        self.progress.pages += result.pages
        self.progress.messages_new += result.new
        self.progress.messages_changed += result.changed

    def _succeeded(self, session_id: str) -> None:
        self._attempts.pop(session_id, None)
        self.failed_sessions.pop(session_id, None)
        if self._state.get_meta(f"failed:{session_id}"):
            self._state.set_meta(f"failed:{session_id}", "")

    def _record_failure(self, session_id: str, priority: int, exc: ZoomError) -> None:
        kind = type(exc).__name__
        self.progress.failures[kind] = self.progress.failures.get(kind, 0) + 1
        attempts = self._attempts.get(session_id, 0) + 1
        self._attempts[session_id] = attempts
        self.incomplete_sessions.add(session_id)
        # Persisted for `status` (another process): the last reason, cleared on success.
        self._state.set_meta(f"failed:{session_id}", str(exc)[:500])
        if self._once and attempts >= FAILURE_LIMIT_ONCE:
            self.failed_sessions[session_id] = str(exc)
            return
        # Retry later, after a pause that grows with repeated failures.
        self._retry_later(session_id, priority, self._backoff(attempts))

    def _retry_later(self, session_id: str, priority: int, delay: float) -> None:
        self._retrying[session_id] = self._retrying.get(session_id, 0) + 1

        def retry() -> None:
            left = self._retrying.pop(session_id, 1) - 1
            if left:
                self._retrying[session_id] = left
            self.enqueue(session_id, priority)

        asyncio.get_running_loop().call_later(delay, retry)


def _listed_after_held(session: Any) -> bool:
    listed = session.last_message_time
    return bool(listed) and listed > (session.synced_message_time or "")


def _due(listed: str | None, began: datetime) -> datetime:
    """When (Zoom time) a sync sees every message of the listed second."""
    second = parse_time(listed)
    if second is None:
        return began
    return second.replace(microsecond=0) + timedelta(seconds=1) + SAME_SECOND_MARGIN


def _second_is_over(listed: str | None, began: datetime) -> bool:
    """Whether a sync that began at `began` has seen every message of the listed second."""
    if listed is None:
        return True
    try:
        second = datetime.fromisoformat(listed)
    except ValueError:
        return True  # not a time we wrote; the old rule (mark it synced) is all we can do
    if second.tzinfo is None:
        second = second.replace(tzinfo=UTC)
    return began >= second + timedelta(seconds=1) + SAME_SECOND_MARGIN
