"""state.sqlite3: schema, connections and transactions shared by State and ManifestIndex.

The database is a cache of facts the manifest holds (plus sync tokens and retry counters that
can be had again from Zoom): deleting it loses nothing. So an unknown schema version, or a file
SQLite cannot read, is answered by starting afresh, never by a migration that could fail.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from archiver.errors import StorageError
from archiver.store.manifest import ZERO_HASH

SCHEMA_VERSION: Final = 2

_DDL: Final = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

-- How far the derived tables below reflect the manifest: the seq and hash of the last line
-- applied. The writer replays every line after it at start-up.
CREATE TABLE manifest_index (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    head TEXT NOT NULL
);
INSERT INTO manifest_index VALUES (1, 0, '{ZERO_HASH}');

-- Every distinct content (digest) archived per message, with the seq of its line. All versions,
-- not only the latest, so content that flips back (webhook shape vs sync shape) gets no line.
CREATE TABLE messages (
    session_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (session_id, message_id, digest)
) WITHOUT ROWID;

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    session_type TEXT,
    last_message_time TEXT,  -- latest last_access_time seen in the session list
    synced_message_time TEXT,  -- last_message_time as of the last completed incremental sync
    newest_token TEXT,
    oldest_token TEXT,
    backfill_done INTEGER NOT NULL DEFAULT 0,
    gone INTEGER NOT NULL DEFAULT 0,
    gone_reason TEXT,
    last_sync_at TEXT,
    messages_archived INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The download ledger. Rows appear with the message line that lists the attachment (same
-- transaction as the dedupe index, so a crash cannot lose a job); `done`/`failed` come from
-- attachment/attachment_failed lines. No download_url: its jwt is a credential (zoom/README.md)
-- and goes stale; the live URL stays in memory and a restart refetches the message.
CREATE TABLE attachments (
    session_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    attachment_id TEXT NOT NULL,
    name TEXT,
    type TEXT,
    size INTEGER,
    exp INTEGER,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    seq INTEGER,
    PRIMARY KEY (session_id, message_id, attachment_id)
) WITHOUT ROWID;
CREATE INDEX attachments_pending ON attachments (exp) WHERE status = 'pending';
"""  # noqa: S608 - a constant, no outside input


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode; writes go through `transaction()` (BEGIN IMMEDIATE)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a power cut may lose the last commits, never consistency. That is enough for
        # a cache whose every loss the start-up replay or a re-sync makes good.
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


# Result codes (low byte) that mean the disk, not the query: full, failing, read-only.
_DISK_ERRORS: Final = {
    sqlite3.SQLITE_FULL: errno.ENOSPC,
    sqlite3.SQLITE_IOERR: errno.EIO,
    sqlite3.SQLITE_READONLY: errno.EROFS,
}


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; a full or failing disk raises StorageError, which stops
    the daemon with one clear line (like the manifest's own write errors) instead of a
    traceback from whichever task touched the state first."""
    try:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads first and
        # then writes can fail with SQLITE_BUSY without waiting when another connection wrote.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some errors (SQLITE_FULL among them); a
            # second ROLLBACK would raise and hide the error that matters.
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        code = _DISK_ERRORS.get((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF)
        if code is None:
            raise
        raise StorageError(code, f"state.sqlite3 cannot be written: {exc}") from exc


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create, mode 0600) the state database with the current schema.

    A file SQLite reports as corrupt or as no database at all is deleted and started afresh:
    it is only a cache. Any other error (permissions, I/O) is the operator's to see.
    """
    try:
        return _open(path)
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    return _open(path)


def _open(path: Path) -> sqlite3.Connection:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # before SQLite creates it world-readable
    os.close(fd)
    os.chmod(path, 0o600)  # WAL and shm files copy the database file's mode
    conn = connect(path)
    try:
        _ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _ensure_schema(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    # Unknown (older, newer, or 0 for a new file): rebuild the cache from nothing, in one
    # transaction so a crash half-way leaves the old version number and a rebuild next time.
    tables = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    drops = "".join(f'DROP TABLE "{name}";' for (name,) in tables)
    conn.executescript(
        f"BEGIN IMMEDIATE;{drops}{_DDL};PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
    )


def clear(conn: sqlite3.Connection) -> None:
    """Forget everything: the cache disagrees with the manifest (restored from elsewhere)."""
    with transaction(conn):
        for table in ("meta", "messages", "sessions", "attachments"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        conn.execute("UPDATE manifest_index SET seq = 0, head = ?", (ZERO_HASH,))
