"""One session's sync: first contact (FSync), backfill (BSync back to the start of history),
ISync afterwards, and the FSync-then-BSync gap fill after 7035/300.

Rules that keep the archive complete (DESIGN.md, invariants 4 and 8):
- A page's messages are durable in the manifest (the writer's fsync) before the token that
  follows them is saved, so a crash can only make us fetch a page again, never skip one.
- Page order, overlap and repeats do not matter: the writer dedupes by content.
- Every walk backwards (backfill and gap fill alike) follows one rule, `sync/walk.py`: it ends
  only on an empty page or, filling a gap, on a page that reaches into the region the earlier
  sync windows covered (a message archived before the recovery began whose `date_time` is
  older than the session's high-water mark `hwm`, the newest time those windows returned; a
  message archived from a webhook is an island ahead of that region, so "already archived"
  alone would end the walk too early). A short page is no proof of anything.
- ISync is repeated while its page comes back full (the boundary message may take a slot) and
  while the newest time the sync windows returned is older than the time the session list
  gave; `StepResult.synced_to` is that evidence. A run of ISyncs that ends on a page that is
  not full but brought new messages is not caught up (`count` is loose): `caught_up` stays
  False and the supervisor makes one confirming ISync. That confirmation counts only when it
  comes back empty, or is the second answer in a row without news (a short page of only the
  boundary message could hide a message behind its one slot). It marks a session synced only
  on both.
- A non-empty page without `sync_token`: its messages are archived, the cursor stays, the
  request is repeated after a pause; `NO_TOKEN_LIMIT` in a row make the step fail.
- A refused cursor (code 300) restarts a walk from the newest end; `REFUSAL_LIMIT` restarts
  in a row without the walk getting further (`walk.advanced`) make the step fail (tokens
  that expire before the next call can come would otherwise re-walk for ever). The walk is
  saved with its count cleared, so the next attempt has the same allowance; whether a step
  got further is reported (`StepResult.advanced`) so that the supervisor does not count a
  step that left its walk open without getting further a success that wipes those failures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Protocol

from archiver.config import MAX_SYNC_COUNT
from archiver.errors import (
    SessionGoneError,
    SyncTokenInvalid,
    ZoomResponseError,
    ZoomSessionError,
)
from archiver.ops.logs import get_logger
from archiver.sync.walk import (
    NO_TOKEN_LIMIT,
    REFUSAL_LIMIT,
    PageFacts,
    Phase,
    Walk,
    advanced,
    after_page,
    is_rewalk,
    page_count,
    restarted,
)
from archiver.zoom.models import JsonObject, SyncPage, parse_time

FSYNC, ISYNC, BSYNC = "FSync", "ISync", "BSync"
ENDPOINT: Final = "GET /phone/sms/sessions/{sessionId}/sync"
# ISync calls in one step before the session goes back in the queue (a busy session cannot
# hold a worker for ever); re-walk pages after a refused cursor in one turn, likewise.
ISYNC_CALLS_PER_STEP: Final = 50
REWALK_PAGES_PER_TURN: Final = 2000
# Pages of a gap walk (after 7035/300) in one step; the gap is saved page by page, so the
# next step (queued again at once) resumes where this one stopped.
GAP_PAGES_PER_STEP: Final = 50

OnArchived = Callable[[str, list[JsonObject]], Awaitable[None]]


class SyncApi(Protocol):
    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage: ...


@dataclass
class StepResult:
    pages: int = 0
    new: int = 0
    changed: int = 0
    backfill_done: bool = False
    gone: bool = False
    # The newest message time the contiguous sync windows have returned (the evidence that a
    # session is synced up to the time the list gave), after this step.
    synced_to: datetime | None = None
    phase: Phase | None = None  # the backfill walk's phase after this step
    # The newest end is caught up as of a call this step made: an FSync (first contact or a
    # gap fill's), or an ISync whose last page came back empty, or without news for the second
    # time in a row. A short ISync page that brought new messages is no such evidence (Zoom's
    # `count` is loose): it earns a confirming ISync (the supervisor queues it).
    caught_up: bool = False
    gap_open: bool = False  # the gap walk's page budget ran out: another step resumes it
    # A walk (backfill or gap) got further than it had been (`walk.advanced`): a step that
    # left its walk open and did not is no progress, whatever news it archived, and does not
    # wipe earlier failures.
    advanced: bool = False


async def _no_attachments(_session_id: str, _records: list[JsonObject]) -> None:
    return None


def _default_pause(attempt: int) -> float:
    return float(min(30.0, 0.5 * 2**attempt))


class SessionSync:
    def __init__(
        self,
        api: SyncApi,
        writer: Any,
        state: Any,
        *,
        count: int,
        on_archived: OnArchived = _no_attachments,
        pause: Callable[[int], float] = _default_pause,
    ) -> None:
        self._api = api
        self._writer = writer
        self._state = state
        self._count = count
        self._on_archived = on_archived
        self._pause = pause  # seconds before repeating a request whose page had no token

    # --- public steps ---------------------------------------------------------------------

    async def incremental(self, session_id: str, listed: datetime | None = None) -> StepResult:
        """Bring the newest end of a session up to date (first contact: FSync).

        `listed`: the session's last message time as the session list gave it. When the ISyncs
        end without the sync windows reaching it, the step recovers once (FSync, then BSync
        back to what is held) instead of trusting the ISync window."""
        result = StepResult()
        try:
            if self._gap(session_id) is not None and not await self._fill_gap(session_id, result):
                return self._finish(session_id, result)  # resumed by the next step
            current = self._state.get_session(session_id)
            if current is None or current.newest_token is None:
                await self._first_contact(session_id, result)
            else:
                recovered = await self._isync(session_id, current.newest_token, result)
                # Behind the list although the ISyncs ran out of news: the ISync window is not
                # to be trusted, recover. A short page with news is not that: the confirming
                # ISync goes on from its token.
                behind = _behind(self.synced_to(session_id), listed)
                if not recovered and result.caught_up and behind:
                    get_logger(session_id=session_id).info("sync_behind_list", listed=str(listed))
                    await self._recover(session_id, result)
        except SessionGoneError as exc:
            await self._gone(session_id, exc, result)
        return self._finish(session_id, result)

    async def backfill(
        self,
        session_id: str,
        max_pages: int,
        should_stop: Callable[[], bool],
        *,
        confirm: bool = False,
    ) -> StepResult:
        """One turn of the walk back towards the start of history: at most `max_pages` pages
        that advance it (re-walk pages after a refused cursor are not counted). A walk that is
        probably at the start moves only in a `confirm` turn: its one confirming BSync."""
        result = StepResult()
        try:
            current = self._state.get_session(session_id)
            if current is None or current.newest_token is None:
                await self._first_contact(session_id, result)
            walk = self.walk_of(session_id)
            if walk.phase is Phase.PROBABLE_START and not confirm:
                return self._finish(session_id, result)
            budget, rewalk = max_pages, 0
            while not walk.ended and budget > 0 and not should_stop():
                sync_type = BSYNC if walk.cursor else FSYNC
                asked = page_count(walk, self._count)
                try:
                    page = await self._api.sync(session_id, sync_type, asked, walk.cursor)
                except SyncTokenInvalid as exc:
                    if walk.cursor is None:
                        raise  # an FSync refused "resync with FSync": Zoom contradicts itself
                    walk = self._restart_walk(session_id, walk, exc)
                    continue
                facts = await self._archive(session_id, page, result)
                previous = walk
                walk = after_page(walk, facts, asked)
                result.advanced |= advanced(previous, facts)
                self._save_walk(session_id, walk)
                if walk.phase is Phase.NO_TOKEN:
                    self._no_token_failure(session_id, walk)
                self._check_room(session_id, walk, asked)
                if is_rewalk(previous, facts, facts.new + facts.changed):
                    rewalk += 1
                    if rewalk >= REWALK_PAGES_PER_TURN:
                        break
                else:
                    budget -= 1
                if walk.phase is Phase.PROBABLE_START and not confirm:
                    # The confirming call waits behind all other work. In a confirm turn the
                    # walk goes on: past a non-empty answer, or to the call itself after a
                    # refused cursor made it walk down from the newest end again.
                    break
                if walk.no_token:
                    await asyncio.sleep(self._pause(walk.no_token))
        except SessionGoneError as exc:
            await self._gone(session_id, exc, result)
        return self._finish(session_id, result)

    def walk_of(self, session_id: str) -> Walk:
        """The backfill walk's saved position (confirmed, when the start is proven)."""
        saved = Walk.from_json(self._state.get_meta(f"walk:{session_id}"))
        if saved is not None:
            return saved
        current = self._state.get_session(session_id)
        if current is None:
            return Walk()
        if current.backfill_done:
            # Marked done by a version that trusted short pages: confirm it once.
            return Walk(current.oldest_token, Phase.PROBABLE_START)
        return Walk(current.oldest_token)

    def synced_to(self, session_id: str) -> datetime | None:
        """The newest message time the contiguous sync windows returned for the session."""
        return parse_time(self._state.get_meta(f"hwm:{session_id}"))

    # --- internals ------------------------------------------------------------------------

    def _finish(self, session_id: str, result: StepResult) -> StepResult:
        if not result.gone:
            walk = self.walk_of(session_id)
            result.phase = walk.phase
            result.backfill_done = walk.phase is Phase.CONFIRMED
            result.synced_to = self.synced_to(session_id)
        return result

    async def _first_contact(self, session_id: str, result: StepResult) -> None:
        """FSync: the newest page, and the start of the backfill walk."""
        for attempt in range(1, NO_TOKEN_LIMIT + 1):
            page = await self._api.sync(session_id, FSYNC, self._count)
            facts = await self._archive(session_id, page, result)
            if page.sync_token or not page.messages:
                walk = after_page(Walk(), facts, self._count)
                self._state.save_sync_tokens(
                    session_id,
                    newest_token=page.sync_token,
                    oldest_token=page.sync_token,
                    backfill_done=walk.phase is Phase.CONFIRMED,
                )
                self._save_walk(session_id, walk)
                self._raise_hwm(session_id, newest_time(page.messages))
                result.caught_up = True
                return
            await asyncio.sleep(self._pause(attempt))
        self._no_token_failure(session_id, Walk(no_token=NO_TOKEN_LIMIT))

    async def _isync(self, session_id: str, token: str, result: StepResult) -> bool:
        """ISync while the page comes back full; 7035/300 starts the gap fill (returns True)."""
        no_token, asked = 0, self._count
        result.caught_up = False  # only this run's last page can say so
        for _ in range(ISYNC_CALLS_PER_STEP):
            sent = token
            try:
                page = await self._api.sync(session_id, ISYNC, asked, token)
            except SyncTokenInvalid as exc:
                get_logger(session_id=session_id).info("sync_resync", code=exc.code)
                await self._recover(session_id, result)
                return True
            facts = await self._archive(session_id, page, result)
            added = facts.new + facts.changed
            if added and self._state.get_meta(f"quiet:{session_id}"):
                self._state.set_meta(f"quiet:{session_id}", "")  # news: no quiet answer in a row
            if page.sync_token:
                token = page.sync_token
                self._state.save_sync_tokens(session_id, newest_token=token)
                self._raise_hwm(session_id, newest_time(page.messages))
                no_token = 0
            elif page.messages:
                # Archived, but without a token we cannot say where the window now ends:
                # the same ISync again (the writer absorbs the repeats).
                no_token += 1
                if no_token >= NO_TOKEN_LIMIT:
                    self._no_token_failure(session_id, Walk(no_token=no_token))
                await asyncio.sleep(self._pause(no_token))
                continue
            if len(page.messages) < asked:
                # Not full: caught up on an empty page, or on the second answer in a row that
                # brought nothing new (the boundary message and repeats): one alone may be a
                # short page whose only slot went to the boundary. Else one confirming ISync
                # (queued by the supervisor) settles it.
                quiet = bool(page.messages) and added == 0
                again = quiet and self._state.get_meta(f"quiet:{session_id}") == "1"
                result.caught_up = not page.messages or again
                self._state.set_meta(f"quiet:{session_id}", "1" if quiet and not again else "")
                return False
            if not added:
                # Full, and nothing new: the boundary message and repeats took every slot
                # (with count = 1 the boundary alone), or the messages were archived before
                # (from webhooks). Twice as many next, up to Zoom's maximum; a page of that
                # many with nothing new that did not move the token fails the step.
                if token == sent:
                    self._check_isync_room(session_id, asked)
                asked = min(MAX_SYNC_COUNT, asked * 2)
        return False

    async def _recover(self, session_id: str, result: StepResult) -> None:
        """After 7035/300: FSync, then (gap fill) BSync until the covered region is met."""
        start_seq = self._writer.seq
        hwm = self._state.get_meta(f"hwm:{session_id}") or None
        self._set_gap(
            session_id,
            {"cursor": None, "newest": None, "seq": start_seq, "hwm": hwm, "top": None},
        )
        await self._fill_gap(session_id, result)

    async def _fill_gap(self, session_id: str, result: StepResult) -> bool:
        """Walk the gap; True when it closed, False when this step's page budget ran out (the
        gap stays saved, page by page, and the next step resumes it). As in a backfill turn,
        the re-walk pages after a refused cursor (`is_rewalk`) cost no budget: else a gap
        deeper than one step whose cursor expires between steps would never close."""
        gap = self._gap(session_id)
        budget, rewalk = GAP_PAGES_PER_STEP, 0
        while gap is not None:
            if budget <= 0:
                result.gap_open = True
                return False
            budget -= 1
            walk = _gap_walk(gap)
            sync_type = BSYNC if walk.cursor else FSYNC
            asked = page_count(walk, self._count)
            try:
                page = await self._api.sync(session_id, sync_type, asked, walk.cursor)
            except SyncTokenInvalid as exc:
                if walk.cursor is None:
                    raise
                gap = self._restart_gap(session_id, gap, walk, exc)
                continue
            boundary = (int(gap["seq"]), gap.get("hwm"))
            facts = await self._archive(session_id, page, result, boundary=boundary)
            if walk.cursor is None:
                # The FSync page: its token is the session's new newest end once the gap closes.
                if not page.sync_token and page.messages:
                    gap = {**gap, "no_token": walk.no_token + 1}
                    self._set_gap(session_id, gap)
                    if gap["no_token"] >= NO_TOKEN_LIMIT:
                        self._no_token_failure(session_id, Walk(no_token=gap["no_token"]))
                    await asyncio.sleep(self._pause(gap["no_token"]))
                    continue
                gap = {**gap, "newest": page.sync_token, "top": newest_time(page.messages)}
            previous = walk
            walk = after_page(walk, facts, asked)
            result.advanced |= advanced(previous, facts)
            if (
                is_rewalk(previous, facts, facts.new + facts.changed)
                and rewalk < REWALK_PAGES_PER_TURN
            ):
                rewalk += 1
                budget += 1
            if walk.ended:
                if gap.get("newest"):
                    self._state.save_sync_tokens(session_id, newest_token=gap["newest"])
                self._raise_hwm(session_id, gap.get("top"))
                self._set_gap(session_id, None)
                result.caught_up = True
                return True
            gap = {
                **gap,
                "cursor": walk.cursor,
                "no_token": walk.no_token,
                "frontier": walk.frontier,
                "refused": walk.refused,
                "widen": walk.widen,
                "rejoined": walk.rejoined,
                "at": walk.at,
                "edge": list(walk.edge),
                "repeat": walk.repeat,  # a first edge-only page: one more BSync settles it
            }
            self._set_gap(session_id, gap)
            if walk.phase is Phase.NO_TOKEN:
                self._no_token_failure(session_id, walk)
            self._check_room(session_id, walk, asked)
            if walk.no_token:
                await asyncio.sleep(self._pause(walk.no_token))
        return True

    async def _archive(
        self,
        session_id: str,
        page: SyncPage,
        result: StepResult,
        boundary: tuple[int, str | None] | None = None,
    ) -> PageFacts:
        """Make a page durable and describe it for the walk. With `boundary` (seq, hwm), `met`
        says whether the page reached the region earlier sync windows covered: a message
        archived at or before `seq` whose time is older than `hwm` (never, when `hwm` is
        unknown: then only the start of history ends the walk)."""
        result.pages += 1
        times = {
            str(m.get("message_id")): t
            for m in page.messages
            if (t := parse_time(m.get("date_time"))) is not None
        }
        met = False
        if boundary is not None and (hwm := parse_time(boundary[1])) is not None:
            older = [mid for mid, t in times.items() if t < hwm.replace(microsecond=0)]
            seqs = self._state.message_seqs(session_id, older) if older else {}
            met = any(seq <= boundary[0] for seq in seqs.values())
        new = changed = 0
        if page.messages:
            try:
                outcome = await self._writer.append_messages(session_id, page.messages, "sync")
            except ValueError as exc:
                # The archive cannot take a record of this page (nothing of it was written):
                # a Zoom error for this session, reported and retried, never a crash of the
                # daemon, and the token stays put so no message is skipped.
                raise ZoomResponseError(
                    f"page refused by the archive: {exc}", endpoint=ENDPOINT, session_id=session_id
                ) from exc
            new, changed = outcome.new, outcome.changed
            result.new += new
            result.changed += changed
            if new or changed:
                await self._on_archived(session_id, page.messages)
        oldest = min(times.values()) if times else None
        return PageFacts(
            new=new,
            changed=changed,
            size=len(page.messages),
            token=page.sync_token or None,
            oldest=oldest,
            met=met,
            ids=tuple(str(m.get("message_id")) for m in page.messages),
            edge=tuple(mid for mid, t in times.items() if t == oldest),
        )

    def _no_token_failure(self, session_id: str, walk: Walk) -> None:
        raise ZoomResponseError(
            f"{walk.no_token} non-empty sync pages in a row without sync_token; "
            "the walk keeps its cursor and is tried again later",
            endpoint=ENDPOINT,
            session_id=session_id,
        )

    def _restart_gap(
        self, session_id: str, gap: dict[str, Any], walk: Walk, exc: SyncTokenInvalid
    ) -> dict[str, Any]:
        """The gap after its cursor was refused, saved: the recovery starts again from the
        top, frontier kept (only a page past it is progress); the step fails after
        `REFUSAL_LIMIT` restarts that never got past it."""
        refused = restarted(walk).refused
        get_logger(session_id=session_id).info("gap_cursor_refused", code=exc.code, refused=refused)
        gap = {
            **gap,
            "cursor": None,
            "newest": None,
            "no_token": 0,
            "edge": [],
            "repeat": None,
            "refused": refused,
            "rejoined": False,
        }
        if refused >= REFUSAL_LIMIT:
            self._set_gap(session_id, {**gap, "refused": 0})
            self._refusal_failure(session_id, refused, exc)
        self._set_gap(session_id, gap)
        return gap

    def _restart_walk(self, session_id: str, walk: Walk, exc: SyncTokenInvalid) -> Walk:
        """The backfill walk after its cursor was refused, saved; the step fails after
        `REFUSAL_LIMIT` restarts that never got past the walk's frontier."""
        walk = restarted(walk)
        get_logger(session_id=session_id).info(
            "walk_cursor_refused", code=exc.code, refused=walk.refused
        )
        if walk.refused >= REFUSAL_LIMIT:
            self._save_walk(session_id, replace(walk, refused=0))
            self._refusal_failure(session_id, walk.refused, exc)
        self._save_walk(session_id, walk)
        return walk

    def _check_room(self, session_id: str, walk: Walk, asked: int) -> None:
        """Fail the step when a page of Zoom's maximum `count` held only the cursor's edge:
        asking for more cannot help (the walk is saved; the next try asks the same)."""
        if walk.widen and asked >= MAX_SYNC_COUNT:
            raise ZoomSessionError(
                f"{walk.widen} full BSync pages in a row (the last of count={asked}, Zoom's "
                "maximum) held only messages the cursor already covered: nothing older can "
                "come back; the walk keeps its cursor and is tried again later",
                endpoint=ENDPOINT,
                session_id=session_id,
            )

    def _check_isync_room(self, session_id: str, asked: int) -> None:
        if asked >= MAX_SYNC_COUNT:
            raise ZoomSessionError(
                f"a full ISync page of count={asked}, Zoom's maximum, held only messages the "
                "token already covered: nothing newer can come back; the token is kept and "
                "tried again later",
                endpoint=ENDPOINT,
                session_id=session_id,
            )

    def _refusal_failure(self, session_id: str, refused: int, exc: SyncTokenInvalid) -> None:
        raise ZoomSessionError(
            f"the sync cursor was refused {refused} times in a row (code {exc.code}) without the "
            "walk getting further than it had been: Zoom's sync tokens expire before this "
            "daemon's next call comes. The walk starts again from the newest end on the next "
            "try; if this repeats, raise [rate_limits] share or lower [sync] workers, so that "
            "one session's calls follow each other sooner",
            endpoint=ENDPOINT,
            session_id=session_id,
        ) from exc

    async def _gone(self, session_id: str, exc: SessionGoneError, result: StepResult) -> None:
        get_logger(session_id=session_id).warning("session_gone", error=str(exc))
        self._state.mark_gone(session_id, str(exc))
        await self._writer.append_event("session_gone", session_id=session_id, status=exc.status)
        result.gone = True

    def _save_walk(self, session_id: str, walk: Walk) -> None:
        self._state.save_sync_tokens(
            session_id,
            oldest_token=walk.cursor,
            backfill_done=walk.phase is Phase.CONFIRMED,
        )
        self._state.set_meta(f"walk:{session_id}", walk.to_json())

    def _raise_hwm(self, session_id: str, moment: str | None) -> None:
        """The newest message time the contiguous sync windows have returned so far."""
        if moment is None:
            return
        current = parse_time(self._state.get_meta(f"hwm:{session_id}"))
        candidate = parse_time(moment)
        if candidate is not None and (current is None or candidate > current):
            self._state.set_meta(f"hwm:{session_id}", candidate.isoformat())

    def _gap(self, session_id: str) -> dict[str, Any] | None:
        raw = self._state.get_meta(f"gap:{session_id}")
        return json.loads(raw) if raw else None

    def _set_gap(self, session_id: str, gap: dict[str, Any] | None) -> None:
        self._state.set_meta(f"gap:{session_id}", json.dumps(gap) if gap else "")


def _gap_walk(gap: dict[str, Any]) -> Walk:
    """The walk a saved gap is at (a gap saved before a field existed reads its default)."""
    return Walk(
        gap.get("cursor"),
        Phase.WALKING,
        int(gap.get("no_token", 0)),
        gap.get("frontier"),
        at=gap.get("at"),
        edge=tuple(gap.get("edge") or ()),
        repeat=gap.get("repeat"),
        refused=int(gap.get("refused", 0)),
        widen=int(gap.get("widen", 0)),
        rejoined=bool(gap.get("rejoined", True)),
    )


def _behind(synced_to: datetime | None, listed: datetime | None) -> bool:
    """Whether the sync windows have not yet reached the listed time (to the second: both
    Zoom's list and its message times have second resolution)."""
    if listed is None:
        return False
    return synced_to is None or synced_to.replace(microsecond=0) < listed.replace(microsecond=0)


def newest_time(messages: list[JsonObject]) -> str | None:
    """The newest `date_time` on a page (ISO, UTC), whatever the page's order."""
    times = [t for m in messages if (t := parse_time(m.get("date_time"))) is not None]
    return max(times).isoformat() if times else None
