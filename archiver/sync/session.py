"""One session's sync: FSync, BSync back to the start of history, ISync afterwards.

Rules that keep the archive complete (DESIGN.md, invariant 4):
- A page's messages are durable in the manifest (the writer's fsync) before the token that
  follows them is saved, so a crash can only make us fetch a page again, never skip one.
- Page order, overlap and repeats do not matter: the writer dedupes by content.
- On 7035 / 300 during ISync: FSync, then BSync until a page reaches back into the region the
  earlier sync windows covered: a message already archived before the recovery began whose
  `date_time` is older than the newest message those windows returned (the session's
  high-water mark, `hwm`). A message archived earlier from a webhook is an island ahead of
  that region, so "already archived" alone would end the walk too early. The recovery cursor
  is saved after each page, so a crash in the middle resumes the gap fill.
- A short page (fewer than `count` messages) from FSync or BSync means history is exhausted:
  Zoom documents `count` as the number of records returned.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from archiver.errors import SessionGoneError, SyncTokenInvalid, ZoomResponseError
from archiver.ops.logs import get_logger
from archiver.zoom.models import JsonObject, SyncPage, parse_time

FSYNC, ISYNC, BSYNC = "FSync", "ISync", "BSync"

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


async def _no_attachments(_session_id: str, _records: list[JsonObject]) -> None:
    return None


class SessionSync:
    def __init__(
        self,
        api: SyncApi,
        writer: Any,
        state: Any,
        *,
        count: int,
        on_archived: OnArchived = _no_attachments,
    ) -> None:
        self._api = api
        self._writer = writer
        self._state = state
        self._count = count
        self._on_archived = on_archived

    # --- public steps ---------------------------------------------------------------------

    async def incremental(self, session_id: str) -> StepResult:
        """Bring the newest end of a session up to date (first contact: FSync)."""
        result = StepResult()
        try:
            if self._gap(session_id) is not None:
                await self._fill_gap(session_id, result, max_pages=None)
                return result
            current = self._state.get_session(session_id)
            if current is None or current.newest_token is None:
                await self._first_contact(session_id, result)
                return result
            try:
                page = await self._api.sync(session_id, ISYNC, self._count, current.newest_token)
            except SyncTokenInvalid as exc:
                get_logger(session_id=session_id).info("sync_resync", code=exc.code)
                await self._recover(session_id, result)
                return result
            await self._archive(session_id, page, result)
            if page.sync_token:
                self._state.save_sync_tokens(session_id, newest_token=page.sync_token)
            self._raise_hwm(session_id, newest_time(page.messages))
            return result
        except SessionGoneError as exc:
            await self._gone(session_id, exc, result)
            return result

    async def backfill(
        self, session_id: str, max_pages: int, should_stop: Callable[[], bool]
    ) -> StepResult:
        """Walk back towards the start of history, at most `max_pages` pages."""
        result = StepResult()
        try:
            current = self._state.get_session(session_id)
            if current is None or current.newest_token is None:
                await self._first_contact(session_id, result)
                current = self._state.get_session(session_id)
            while (
                current is not None
                and not current.backfill_done
                and result.pages < max_pages
                and not should_stop()
            ):
                cursor = current.oldest_token
                if cursor is None:
                    # The BSync cursor was lost (expired): start over from the newest end.
                    page = await self._api.sync(session_id, FSYNC, self._count)
                else:
                    try:
                        page = await self._api.sync(session_id, BSYNC, self._count, cursor)
                    except SyncTokenInvalid:
                        self._state.save_sync_tokens(session_id, oldest_token=None)
                        current = self._state.get_session(session_id)
                        continue
                await self._archive(session_id, page, result)
                done = len(page.messages) < self._count
                if not done and not page.sync_token:
                    raise ZoomResponseError(
                        "BSync page without sync_token; cannot continue backwards",
                        endpoint="GET /phone/sms/sessions/{sessionId}/sync",
                        session_id=session_id,
                    )
                self._state.save_sync_tokens(
                    session_id,
                    oldest_token=page.sync_token or cursor,
                    backfill_done=done,
                )
                result.backfill_done = done
                current = self._state.get_session(session_id)
            return result
        except SessionGoneError as exc:
            await self._gone(session_id, exc, result)
            return result

    # --- internals ------------------------------------------------------------------------

    async def _first_contact(self, session_id: str, result: StepResult) -> None:
        page = await self._api.sync(session_id, FSYNC, self._count)
        await self._archive(session_id, page, result)
        done = len(page.messages) < self._count
        if not page.sync_token and not done:
            raise ZoomResponseError(
                "FSync page without sync_token",
                endpoint="GET /phone/sms/sessions/{sessionId}/sync",
                session_id=session_id,
            )
        self._state.save_sync_tokens(
            session_id,
            newest_token=page.sync_token,
            oldest_token=page.sync_token,
            backfill_done=done,
        )
        self._raise_hwm(session_id, newest_time(page.messages))
        result.backfill_done = done

    async def _recover(self, session_id: str, result: StepResult) -> None:
        start_seq = self._writer.seq
        hwm = self._state.get_meta(f"hwm:{session_id}") or None
        page = await self._api.sync(session_id, FSYNC, self._count)
        met = await self._archive(session_id, page, result, boundary=(start_seq, hwm))
        top = newest_time(page.messages)
        if met or len(page.messages) < self._count:
            self._state.save_sync_tokens(session_id, newest_token=page.sync_token)
            self._raise_hwm(session_id, top)
            return
        if not page.sync_token:
            raise ZoomResponseError(
                "FSync page without sync_token",
                endpoint="GET /phone/sms/sessions/{sessionId}/sync",
                session_id=session_id,
            )
        self._set_gap(
            session_id,
            {
                "cursor": page.sync_token,
                "newest": page.sync_token,
                "seq": start_seq,
                "hwm": hwm,
                "top": top,
            },
        )
        await self._fill_gap(session_id, result, max_pages=None)

    async def _fill_gap(self, session_id: str, result: StepResult, max_pages: int | None) -> None:
        gap = self._gap(session_id)
        while gap is not None and (max_pages is None or result.pages < max_pages):
            try:
                page = await self._api.sync(session_id, BSYNC, self._count, gap["cursor"])
            except SyncTokenInvalid:
                # The gap cursor itself expired: start the recovery again from the top.
                self._set_gap(session_id, None)
                await self._recover(session_id, result)
                return
            met = await self._archive(
                session_id, page, result, boundary=(int(gap["seq"]), gap.get("hwm"))
            )
            exhausted = len(page.messages) < self._count
            if met or exhausted or not page.sync_token:
                self._state.save_sync_tokens(session_id, newest_token=gap["newest"])
                self._raise_hwm(session_id, gap.get("top"))
                self._set_gap(session_id, None)
                return
            gap = {**gap, "cursor": page.sync_token}
            self._set_gap(session_id, gap)

    async def _archive(
        self,
        session_id: str,
        page: SyncPage,
        result: StepResult,
        boundary: tuple[int, str | None] | None = None,
    ) -> bool:
        """Make a page durable. With `boundary` (seq, hwm), also say whether the page reached
        the region earlier sync windows covered: a message archived at or before `seq`
        whose time is older than `hwm` (never, when `hwm` is unknown: walk to the start)."""
        result.pages += 1
        met = False
        if boundary is not None and boundary[1] is not None and page.messages:
            start_seq, hwm = boundary[0], parse_time(boundary[1])
            older = {
                m["message_id"]
                for m in page.messages
                if (t := parse_time(m.get("date_time"))) is not None
                and hwm is not None
                and t < hwm.replace(microsecond=0)
            }
            seqs = self._state.message_seqs(session_id, list(older)) if older else {}
            met = any(seq <= start_seq for seq in seqs.values())
        if page.messages:
            try:
                outcome = await self._writer.append_messages(session_id, page.messages, "sync")
            except ValueError as exc:
                # The archive cannot take a record of this page (nothing of it was written):
                # a Zoom error for this session, reported and retried, never a crash of the
                # daemon, and the token stays put so no message is skipped.
                raise ZoomResponseError(
                    f"page refused by the archive: {exc}",
                    endpoint="GET /phone/sms/sessions/{sessionId}/sync",
                    session_id=session_id,
                ) from exc
            result.new += outcome.new
            result.changed += outcome.changed
            if outcome.new or outcome.changed:
                await self._on_archived(session_id, page.messages)
        return met

    async def _gone(self, session_id: str, exc: SessionGoneError, result: StepResult) -> None:
        get_logger(session_id=session_id).warning("session_gone", error=str(exc))
        self._state.mark_gone(session_id, str(exc))
        await self._writer.append_event("session_gone", session_id=session_id, status=exc.status)
        result.gone = True

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


def newest_time(messages: list[JsonObject]) -> str | None:
    """The newest `date_time` on a page (ISO, UTC), whatever the page's order."""
    times = [t for m in messages if (t := parse_time(m.get("date_time"))) is not None]
    return max(times).isoformat() if times else None
