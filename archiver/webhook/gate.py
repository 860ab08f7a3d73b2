"""One session's message writes take turns, so a late webhook never overwrites the API.

The receiver writes an event's message only if the archive holds no version of it yet: the
sync API's record is authoritative, and the event's object always differs from it (another
shape, records.py), so any webhook write after the sync's would add a version that supersedes
the API's. Checking and writing are two steps, though, and a sync page holding the same message
may be committed between them; the webhook's version would then supersede the API's.
Observed, not hypothetical: the ISync a webhook asks for often fetches the session's next
message just as that message's own event arrives.

`SessionGate` closes the gap: it wraps the manifest writer, and the sync path's
`append_messages` and the receiver's check-then-write for one session run under one lock.
Other sessions, attachment lines and events are not held up; a lock lives only while someone
holds or waits for it. The writer itself already orders and dedupes every line; this only
makes the receiver's "not yet archived?" question and its write one step.

(A writer option that refuses records whose message is already archived, judged in the writer
thread like the dedupe itself, would make this wrapper unnecessary.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from archiver.store.writer import AppendResult, ManifestWriter


class SessionGate:
    """The manifest writer as the sync path and the receiver see it when webhooks are on."""

    def __init__(self, writer: ManifestWriter) -> None:
        self._writer = writer
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # session -> (lock, users)

    @property
    def seq(self) -> int:
        return self._writer.seq

    async def append_messages(
        self, session_id: str, records: Sequence[Mapping[str, Any]], source: str
    ) -> AppendResult:
        async with self._turn(session_id):
            return await self._writer.append_messages(session_id, records, source)

    async def append_if_new(
        self,
        session_id: str,
        record: Mapping[str, Any],
        source: str,
        archived: Callable[[str, str], bool],
    ) -> AppendResult | None:
        """Write `record` unless `archived(session_id, message_id)`; None when it was."""
        async with self._turn(session_id):
            if archived(session_id, record["message_id"]):
                return None
            return await self._writer.append_messages(session_id, [record], source)

    async def append_entries(self, entries: Sequence[Mapping[str, Any]]) -> list[int]:
        return await self._writer.append_entries(entries)

    async def append_event(self, name: str, **details: Any) -> int:
        return await self._writer.append_event(name, **details)

    @contextlib.asynccontextmanager
    async def _turn(self, session_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(session_id) or (asyncio.Lock(), 0)
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    @property
    def sessions_held(self) -> int:
        """Sessions with a lock alive (tests: the map does not grow)."""
        return len(self._locks)
