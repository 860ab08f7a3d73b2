"""Operational state in ROOT/state.sqlite3: sessions, sync tokens, key/values, download ledger.

A cache (DESIGN.md): deleting the file loses nothing. The dedupe index and the ledger's
done/failed facts are rebuilt from the manifest by the writer at start-up (see `index.py`);
sync tokens and watermarks are had again by re-syncing, which the dedupe index makes cheap.

Calls are short and run on the event-loop thread. The manifest writer keeps its own connection
in its own thread (`ManifestIndex`); WAL lets both work side by side.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal

from archiver.store.crash import crash_point
from archiver.store.layout import STATE_FILE
from archiver.store.manifest import utc_now_rfc3339
from archiver.store.schema import open_database, transaction

AttachmentStatus = Literal["pending", "done", "failed"]
_PAGE: Final = 500


class _Unchanged(Enum):
    UNCHANGED = "unchanged"


UNCHANGED: Final = _Unchanged.UNCHANGED
"""Sentinel for `save_sync_tokens`: leave this field as it is (None would clear it)."""


@dataclass(frozen=True, slots=True)
class SessionState:
    session_id: str
    session_type: str | None
    last_message_time: str | None
    synced_message_time: str | None
    newest_token: str | None
    oldest_token: str | None
    backfill_done: bool
    gone: bool
    last_sync_at: str | None
    messages_archived: int


@dataclass(frozen=True, slots=True)
class AttachmentJob:
    session_id: str
    message_id: str
    attachment_id: str
    name: str | None
    type: str | None
    size: int | None
    exp: int | None  # JWT expiry (unix seconds) of the last URL seen; None: refetch first
    status: AttachmentStatus
    attempts: int
    last_error: str | None
    created_at: str


_SESSION_COLUMNS: Final = (
    "session_id, session_type, last_message_time, synced_message_time, newest_token, "
    "oldest_token, backfill_done, "
    "gone, last_sync_at, messages_archived"
)
_JOB_COLUMNS: Final = (
    "session_id, message_id, attachment_id, name, type, size, exp, status, attempts, "
    "last_error, created_at"
)


def _session(row: tuple[Any, ...]) -> SessionState:
    sid, stype, last, synced_time, newest, oldest, backfill, gone, synced, archived = row
    return SessionState(
        sid, stype, last, synced_time, newest, oldest, bool(backfill), bool(gone), synced, archived
    )


class State:
    """The state database, opened with `State.open(root)`; `close()` when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, root: Path) -> State:
        """Open ROOT/state.sqlite3, creating it (mode 0600) or rebuilding an unknown schema."""
        path = root / STATE_FILE
        return cls(path, open_database(path))

    def close(self) -> None:
        self._conn.close()

    # --- sessions -----------------------------------------------------------------------

    def upsert_session(
        self,
        session_id: str,
        *,
        session_type: str | None = None,
        last_message_time: str | None = None,
    ) -> None:
        """Record a discovered session; None leaves a known field as it was."""
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO sessions (session_id, session_type, last_message_time) "
                "VALUES (?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
                "session_type = coalesce(excluded.session_type, session_type), "
                "last_message_time = nullif(max(coalesce(excluded.last_message_time, ''), "
                "coalesce(last_message_time, '')), '')",
                (session_id, session_type, last_message_time),
            )

    def mark_synced(self, session_id: str, message_time: str | None) -> None:
        """An incremental sync that started when the list said `message_time` has completed:
        the session is clean up to there. Persisted, so a crash between a discovery poll
        and the sync it asked for cannot lose the need to sync (see `needs_sync`)."""
        with transaction(self._conn) as conn:
            conn.execute(
                "UPDATE sessions SET synced_message_time = ? WHERE session_id = ?",
                (message_time or "", session_id),
            )

    def get_session(self, session_id: str) -> SessionState | None:
        row = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?",  # noqa: S608
            (session_id,),
        ).fetchone()
        return None if row is None else _session(row)

    def save_sync_tokens(
        self,
        session_id: str,
        *,
        newest_token: str | _Unchanged | None = UNCHANGED,
        oldest_token: str | _Unchanged | None = UNCHANGED,
        backfill_done: bool | _Unchanged = UNCHANGED,
    ) -> None:
        """Save sync progress. Call only once the messages before the token are durable
        (invariant 4), i.e. after `ManifestWriter.append_messages` returned."""
        changes: dict[str, Any] = {"last_sync_at": utc_now_rfc3339()}
        if newest_token is not UNCHANGED:
            changes["newest_token"] = newest_token
        if oldest_token is not UNCHANGED:
            changes["oldest_token"] = oldest_token
        if backfill_done is not UNCHANGED:
            changes["backfill_done"] = int(backfill_done)
        columns = ", ".join(changes)
        updates = ", ".join(f"{name} = excluded.{name}" for name in changes)
        marks = ", ".join("?" * (len(changes) + 1))
        crash_point("token_before_save")
        with transaction(self._conn) as conn:
            conn.execute(
                f"INSERT INTO sessions (session_id, {columns}) VALUES ({marks}) "  # noqa: S608
                f"ON CONFLICT (session_id) DO UPDATE SET {updates}",
                (session_id, *changes.values()),
            )
        crash_point("token_after_save")

    def mark_gone(self, session_id: str, reason: str) -> None:
        """The session no longer exists upstream; keep what is archived, stop syncing it."""
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO sessions (session_id, gone, gone_reason) VALUES (?, 1, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET gone = 1, "
                "gone_reason = excluded.gone_reason",
                (session_id, reason),
            )

    def mark_back(self, session_id: str) -> None:
        """A session marked gone shows new activity in the list: sync it again from scratch
        (first contact), keeping what is archived; the dedupe index absorbs the repeats."""
        with transaction(self._conn) as conn:
            conn.execute(
                "UPDATE sessions SET gone = 0, gone_reason = NULL, newest_token = NULL, "
                "oldest_token = NULL, backfill_done = 0 WHERE session_id = ?",
                (session_id,),
            )
            conn.execute(
                "DELETE FROM meta WHERE key IN (?, ?)", (f"walk:{session_id}", f"gap:{session_id}")
            )

    def sessions(
        self,
        *,
        backfill_done: bool | None = None,
        active_since: str | None = None,
        include_gone: bool = False,
        needs_sync: bool = False,
    ) -> Iterator[SessionState]:
        """Sessions matching every given filter, by session_id, read a page at a time.

        `active_since` compares `last_message_time` as text: Zoom's UTC timestamps in one format
        sort correctly that way.
        """
        where: list[str] = ["session_id > ?"]
        params: list[object] = []
        if backfill_done is not None:
            where.append("backfill_done = ?")
            params.append(int(backfill_done))
        if active_since is not None:
            where.append("last_message_time >= ?")
            params.append(active_since)
        if not include_gone:
            where.append("gone = 0")
        if needs_sync:
            where.append("(synced_message_time IS NULL OR last_message_time > synced_message_time)")
        query = (
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {' AND '.join(where)} "  # noqa: S608
            f"ORDER BY session_id LIMIT {_PAGE}"
        )
        after = ""
        while True:
            # Keyset pages: callers may write to the database between items.
            rows = self._conn.execute(query, (after, *params)).fetchall()
            yield from map(_session, rows)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def has_message(self, session_id: str, message_id: str) -> bool:
        """True when some version of the message is archived (in the manifest and indexed)."""
        row = self._conn.execute(
            "SELECT 1 FROM messages WHERE session_id = ? AND message_id = ? LIMIT 1",
            (session_id, message_id),
        ).fetchone()
        return row is not None

    def message_seqs(self, session_id: str, message_ids: Iterable[str]) -> dict[str, int]:
        """message_id -> seq of its FIRST line, for the ids that are archived."""
        ids = list(dict.fromkeys(message_ids))
        found: dict[str, int] = {}
        for start in range(0, len(ids), _PAGE):
            chunk = ids[start : start + _PAGE]
            rows = self._conn.execute(
                "SELECT message_id, min(seq) FROM messages WHERE session_id = ? "  # noqa: S608
                f"AND message_id IN ({', '.join('?' * len(chunk))}) GROUP BY message_id",
                (session_id, *chunk),
            )
            found.update((str(mid), int(seq)) for mid, seq in rows)
        return found

    # --- key/value ----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def delete_meta(self, key: str) -> None:
        with transaction(self._conn) as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    # --- replica (archiver/replica/): keys known to be in the bucket -----------------------
    # Created on first use, outside the schema version: a bucket's content does not change
    # with the local schema, and a lost table is rebuilt by HEADing the bucket again. It
    # speaks of one bucket (endpoint, bucket, prefix): the replicator empties it when they
    # change (replica_reset). `until`: the retain-until the object was last given (ISO).

    def _replica_table(self) -> None:
        if getattr(self, "_replica_made", False):
            return
        self._conn.execute("DROP TABLE IF EXISTS replica_objects")  # before `until` existed
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS replica_cache (key TEXT PRIMARY KEY, until TEXT)"
            " WITHOUT ROWID"
        )
        self._replica_made = True

    def replica_has(self, key: str) -> bool:
        self._replica_table()
        row = self._conn.execute("SELECT 1 FROM replica_cache WHERE key = ?", (key,))
        return row.fetchone() is not None

    def replica_until(self, key: str) -> str | None:
        """The retain-until recorded for `key`; None when not known to be in the bucket."""
        self._replica_table()
        row = self._conn.execute("SELECT until FROM replica_cache WHERE key = ?", (key,))
        found = row.fetchone()
        return None if found is None else str(found[0] or "")

    def replica_add(self, keys: Iterable[str], until: str = "") -> None:
        self._replica_table()
        with transaction(self._conn) as conn:
            conn.executemany(
                "INSERT INTO replica_cache (key, until) VALUES (?, ?) ON CONFLICT (key) DO "
                "UPDATE SET until = max(until, excluded.until)",
                ((k, until) for k in keys),
            )

    def replica_reset(self) -> None:
        """Forget every key (another bucket, or one that lost our objects)."""
        self._replica_table()
        with transaction(self._conn) as conn:
            conn.execute("DELETE FROM replica_cache")

    # --- download ledger ----------------------------------------------------------------

    def enqueue_attachment(
        self,
        session_id: str,
        message_id: str,
        attachment_id: str,
        *,
        name: str | None,
        type: str | None,
        size: int | None,
        exp: int | None,
    ) -> None:
        """Make sure a job exists (the writer already adds one per archived message) and note
        the expiry of the URL the caller holds. Idempotent; a finished job stays finished."""
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO attachments (session_id, message_id, attachment_id, name, type, "
                "size, exp, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET exp = excluded.exp WHERE status = 'pending'",
                (session_id, message_id, attachment_id, name, type, size, exp, utc_now_rfc3339()),
            )

    def pending_attachments(self, limit: int | None = None) -> list[AttachmentJob]:
        """Pending jobs, earliest URL expiry first; unknown expiry (URL to refetch) before all."""
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM attachments WHERE status = 'pending' "  # noqa: S608
            "ORDER BY exp LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [AttachmentJob(*row) for row in rows]

    def attachment_pending(self, session_id: str, message_id: str, attachment_id: str) -> bool:
        """True while the job exists and has no attachment/attachment_failed line yet."""
        row = self._conn.execute(
            "SELECT status FROM attachments "
            "WHERE session_id = ? AND message_id = ? AND attachment_id = ?",
            (session_id, message_id, attachment_id),
        ).fetchone()
        return row is not None and row[0] == "pending"

    def mark_attachment(
        self, session_id: str, message_id: str, attachment_id: str, *, error: str | None
    ) -> None:
        """Count one download attempt that did not end the job (`error`: why, no secrets).

        A job becomes `done` or `failed` only through its attachment/attachment_failed line
        (the writer updates the ledger with the line): a ledger that said `done` without the
        line would leave the attachment missing from the archive for good after a crash.
        """
        with transaction(self._conn) as conn:
            conn.execute(
                "UPDATE attachments SET attempts = attempts + 1, last_error = ? "
                "WHERE session_id = ? AND message_id = ? AND attachment_id = ?",
                (error, session_id, message_id, attachment_id),
            )

    def attachment_counts(self) -> dict[str, int]:
        """Jobs per status, for `status` and metrics."""
        rows = self._conn.execute("SELECT status, count(*) FROM attachments GROUP BY status")
        counts = {"pending": 0, "done": 0, "failed": 0}
        counts.update({str(status): int(n) for status, n in rows})
        return counts
