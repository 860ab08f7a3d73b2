"""Read-only looks into state.sqlite3 for the start-up check and for `verify`.

Both must not change ROOT: the start-up check runs before anything is written (a refusal
leaves the archive exactly as it was found), and `verify` may run beside a live daemon or on a
read-only copy. Neither trusts the state for anything but hints: the index position says how
far the manifest was seen, the ledger which attachments are still being fetched.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from archiver.store.schema import SCHEMA_VERSION

# Set by the writer once it has opened an index: an index at seq 0 without it was created
# just now (or rebuilt from nothing), so a non-empty manifest is being replayed into a new
# cache, which is worth a `state_rebuilt` event. With it, seq 0 only means no line was
# applied yet (a crash after the first fsync, before the index caught up).
META_INDEX_STARTED: Final = "manifest_index_started"
# The seq of the `stop` line of the daemon's last clean stop, removed when it next opens the
# writer: while it is set, only start-up events may follow that line (recovery.py).
META_CLEAN_STOP: Final = "manifest_clean_stop"
# The start-up events a start owes the manifest (JSON: "rebuild" {old_seq, old_head},
# "set_aside" [notes moved], "torn" {segment, bytes_removed, sha256, recovered}): set durably
# before the replay, the move or the cut they record, cleared once their lines are durable, so
# a crash in between leaves the next start to write them (writer.py).
META_OWED: Final = "startup_events_owed"


@dataclass(frozen=True)
class IndexPosition:
    seq: int
    head: str
    started: bool  # META_INDEX_STARTED was set
    clean_stop: int | None = None  # META_CLEAN_STOP
    rebuild_owed: bool = False  # META_OWED holds a rebuild: a crashed start was rebuilding


def _connect(path: Path, *, locked: bool) -> sqlite3.Connection:
    """A read-only connection. Under the archive lock with no WAL file left behind, nobody
    writes the file and `immutable` reads it without creating -wal/-shm; otherwise `mode=ro`
    (SQLite may create its shared-memory file, never touching the database)."""
    wal = path.with_name(path.name + "-wal")
    mode = "immutable=1" if locked and not wal.exists() else "mode=ro"
    return sqlite3.connect(f"file:{path}?{mode}", uri=True, timeout=30.0)


def read_position(path: Path, *, locked: bool = True) -> IndexPosition | None:
    """The index position the state holds; None when there is no usable state (absent,
    unreadable, another schema version: the writer then starts the cache afresh)."""
    if not path.is_file():
        return None
    try:
        with closing(_connect(path, locked=locked)) as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                return None
            row = conn.execute("SELECT seq, head FROM manifest_index").fetchone()
            started = conn.execute(
                "SELECT 1 FROM meta WHERE key = ?", (META_INDEX_STARTED,)
            ).fetchone()
            stop = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (META_CLEAN_STOP,)
            ).fetchone()
            owed = conn.execute("SELECT value FROM meta WHERE key = ?", (META_OWED,)).fetchone()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    clean_stop = int(stop[0]) if stop is not None and str(stop[0]).isdigit() else None
    rebuild = "rebuild" in parse_owed(None if owed is None else str(owed[0]))
    return IndexPosition(int(row[0]), str(row[1]), started is not None, clean_stop, rebuild)


def parse_owed(text: str | None) -> dict[str, Any]:
    """META_OWED's value as a dict ({} when absent or not a JSON object)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def pending_attachments(path: Path) -> tuple[int, set[tuple[str, str, str]]] | None:
    """(index seq, {(session_id, message_id, attachment_id)} still pending) from the ledger;
    None without a usable state. Lines after the index seq are not in the ledger yet."""
    if not path.is_file():
        return None
    try:
        # As if locked: with no -wal file nobody writes it now, and `immutable` leaves ROOT
        # as it is (mode=ro would create -wal/-shm beside it; verify never writes into ROOT).
        with closing(_connect(path, locked=True)) as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                return None
            (seq,) = conn.execute("SELECT seq FROM manifest_index").fetchone()
            rows = conn.execute(
                "SELECT session_id, message_id, attachment_id FROM attachments "
                "WHERE status = 'pending'"
            ).fetchall()
    except (sqlite3.Error, TypeError):
        return None
    return int(seq), {(str(s), str(m), str(a)) for s, m, a in rows}
