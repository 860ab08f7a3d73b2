"""A temporary SQLite index of the manifest: what to export, in which order, without RAM.

Keeping even one small entry per message in a dict grows with the archive (about 100 bytes
each: 100 MB for a million messages). SQLite keeps the same index on disk, sorts by session and
time with bounded memory, and answers "latest version of this message" and "attachment lines of
this message" by index look-ups. Rows hold positions and the few fields that filtering and
ordering need; the lines themselves are read back from the segments when they are written out.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from archiver.export.filters import ExportFilter, as_text, matches, record_epoch
from archiver.export.reader import Line, ManifestScan

_BATCH: Final = 5000
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FD_FOLDER = re.compile(r"/proc/self/fd/[0-9]+")
PROBLEMS_KEPT: Final = 1000

_SCHEMA = """
CREATE TABLE msg(seq INTEGER PRIMARY KEY, session_id BLOB NOT NULL, message_id BLOB NOT NULL,
    epoch INTEGER, match INTEGER NOT NULL, seg INTEGER NOT NULL, off INTEGER NOT NULL,
    len INTEGER NOT NULL, sha BLOB NOT NULL);
CREATE TABLE att(seq INTEGER PRIMARY KEY, session_id BLOB NOT NULL, message_id BLOB NOT NULL,
    attachment_id BLOB NOT NULL, kind TEXT NOT NULL, sha256 TEXT, size BLOB, reason BLOB,
    seg INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, sha BLOB NOT NULL);
CREATE TABLE problem(id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE page(session_id BLOB PRIMARY KEY, file TEXT NOT NULL UNIQUE, messages INTEGER,
    first INTEGER, last INTEGER, people BLOB NOT NULL);
CREATE TABLE written(path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL);
"""


def blob_ok(sha256: object, blob: object) -> bool:
    """The only blob path an export will open: `blobs/sha256/<2 hex>/<64 hex>` for its hash."""
    return (
        isinstance(sha256, str)
        and _HEX64.fullmatch(sha256) is not None
        and blob == f"blobs/sha256/{sha256[:2]}/{sha256}"
    )


@dataclass(frozen=True, slots=True)
class Selected:
    """One message line to show: where it is, and its version among the message's lines."""

    seq: int
    session_id: str
    epoch: int | None
    version: int
    versions: int
    latest: bool
    seg: int
    off: int
    length: int
    sha: bytes


class PageRow(NamedTuple):
    """One session page as index.html lists it."""

    session_id: str
    file: str
    messages: int
    first: int | None
    last: int | None
    people: str


@dataclass(frozen=True, slots=True)
class AttachmentState:
    """The archive's answer for one attachment: a blob, a recorded failure, or nothing yet."""

    attachment_id: str
    kind: str  # "attachment", "attachment_failed", or "invalid" (unusable blob path)
    sha256: str | None
    size: str  # as the attachment line records it ("" when absent)
    reason: str


class ExportIndex:
    def __init__(self, folder: str) -> None:
        """The index in a temporary database whose file SQLite makes in `folder` (the --out
        descriptor's /proc/self/fd/N path): created O_CREAT|O_EXCL|O_NOFOLLOW, 0600, under a
        random name, and unlinked at once, so no name of it is ever there to be replaced by a
        link, and a link planted beforehand is never followed. Sorts spill there too
        (temp_store=FILE). sqlite3.OperationalError when `folder` is not a writable folder.
        """
        if not _FD_FOLDER.fullmatch(folder):
            raise ValueError(f"not a /proc/self/fd/N folder: {folder!r}")
        # isolation_level=None: autocommit, with one explicit transaction around the bulk load
        # (each statement after it is a transaction of its own). Journal off and no fsync:
        # the file is scratch space, gone whatever happens.
        self.db = sqlite3.connect("", isolation_level=None)
        try:
            # Process-wide (SQLite's temporary folder): set for the index's life only. Only
            # digits and slashes, checked above, go into the statement.
            self.db.execute(f"PRAGMA temp_store_directory = '{folder}'")
        except BaseException:
            self.db.close()
            raise
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;"
            "PRAGMA cache_size=-8192;" + _SCHEMA
        )
        self.problems = 0

    def close(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed already
            self.db.execute("PRAGMA temp_store_directory = ''")
        self.db.close()

    def problem(self, text: str) -> None:
        """Record a problem for export.json; only the first PROBLEMS_KEPT are kept in full."""
        self.problems += 1
        if self.problems <= PROBLEMS_KEPT:
            self.db.execute("INSERT INTO problem(text) VALUES (?)", (text,))

    def problem_texts(self) -> Iterator[str]:
        for (text,) in self.db.execute("SELECT text FROM problem ORDER BY id"):
            yield text

    def add_written(self, path: str, sha256: str, size: int) -> None:
        """A file of the export, for export.json (kept here so a huge export needs no RAM)."""
        self.db.execute("INSERT INTO written VALUES (?,?,?)", (path, sha256, size))

    def is_written(self, path: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM written WHERE path = ?", (path,)).fetchone() is not None
        )

    def written(self) -> Iterator[tuple[str, str, int]]:
        yield from self.db.execute("SELECT path, sha256, size FROM written ORDER BY path")

    def add_page(self, row: PageRow) -> None:
        """A session page, listed later on index.html."""
        values = (_db(row.session_id), row.file, row.messages, row.first, row.last)
        self.db.execute("INSERT INTO page VALUES (?,?,?,?,?,?)", (*values, _db(row.people)))

    def pages(self) -> Iterator[PageRow]:
        """Session pages, most recent conversation first."""
        for row in self.db.execute("SELECT * FROM page ORDER BY last DESC, session_id"):
            yield PageRow(_py(row[0]), row[1], row[2], row[3], row[4], _py(row[5]))

    # --- pass 1: the whole manifest ---------------------------------------------------------

    def load(self, scan: ManifestScan, flt: ExportFilter) -> None:
        msgs: list[tuple[Any, ...]] = []
        atts: list[tuple[Any, ...]] = []
        self.db.execute("BEGIN")
        for line in scan:
            kind = line.obj.get("kind")
            if kind == "message":
                row = self._message_row(line, flt)
                if row is not None:
                    msgs.append(row)
            elif kind in ("attachment", "attachment_failed"):
                row = self._attachment_row(line, flt)
                if row is not None:
                    atts.append(row)
            if len(msgs) >= _BATCH or len(atts) >= _BATCH:
                self._flush(msgs, atts)
        self._flush(msgs, atts)
        self.db.execute("COMMIT")

    def _flush(self, msgs: list[tuple[Any, ...]], atts: list[tuple[Any, ...]]) -> None:
        self.db.executemany("INSERT INTO msg VALUES (?,?,?,?,?,?,?,?,?)", msgs)
        self.db.executemany("INSERT INTO att VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", atts)
        msgs.clear()
        atts.clear()

    def _message_row(self, line: Line, flt: ExportFilter) -> tuple[Any, ...] | None:
        obj = line.obj
        session_id, message_id, record = (
            obj.get("session_id"),
            obj.get("message_id"),
            obj.get("record"),
        )
        if not (isinstance(session_id, str) and isinstance(message_id, str)):
            self.problem(f"seq {line.seq}: message line without session_id/message_id")
            return None
        if not isinstance(record, dict):
            self.problem(f"seq {line.seq}: message line without a record object")
            return None
        if flt.sessions and session_id not in flt.sessions:
            return None  # the session never changes between versions: skip early
        return (
            line.seq,
            _db(session_id),
            _db(message_id),
            record_epoch(record),
            matches(flt, session_id, record),
            *_where(line),
        )

    def _attachment_row(self, line: Line, flt: ExportFilter) -> tuple[Any, ...] | None:
        obj = line.obj
        ids = (obj.get("session_id"), obj.get("message_id"), obj.get("attachment_id"))
        if not all(isinstance(value, str) for value in ids):
            self.problem(f"seq {line.seq}: attachment line without its ids")
            return None
        if flt.sessions and ids[0] not in flt.sessions:
            return None
        kind, sha256, reason = str(obj["kind"]), obj.get("sha256"), as_text(obj.get("reason"))
        if kind == "attachment" and not blob_ok(sha256, obj.get("blob")):
            # Never opened; reported by `select` when its message is part of the export.
            kind, sha256, reason = "invalid", None, "the manifest line names no valid blob"
        if kind != "attachment":
            sha256 = None
        size = as_text(obj.get("size"))
        keys = (_db(str(value)) for value in ids)
        return (line.seq, *keys, kind, sha256, _db(size), _db(reason), *_where(line))

    # --- selection -------------------------------------------------------------------------

    def select(self, all_versions: bool) -> None:
        """Choose the lines to show: a message is in when its latest version matches; then
        either that version only, or (all_versions) every version of it."""
        self.db.executescript(
            """
            CREATE INDEX msg_key ON msg(session_id, message_id, seq);
            CREATE INDEX att_key ON att(session_id, message_id, seq);
            CREATE TABLE latest AS
                SELECT session_id, message_id, MAX(seq) AS seq, COUNT(*) AS n
                FROM msg GROUP BY session_id, message_id;
            CREATE TABLE sel(seq INTEGER PRIMARY KEY, session_id BLOB, message_id BLOB,
                epoch INTEGER, version INTEGER, versions INTEGER, latest INTEGER);
            """
        )
        if all_versions:
            self.db.execute(
                """
                INSERT INTO sel
                SELECT m.seq, m.session_id, m.message_id, m.epoch,
                    ROW_NUMBER() OVER (PARTITION BY m.session_id, m.message_id ORDER BY m.seq),
                    l.n, m.seq = l.seq
                FROM latest l JOIN msg lm ON lm.seq = l.seq
                JOIN msg m ON m.session_id = l.session_id AND m.message_id = l.message_id
                WHERE lm.match
                """
            )
        else:
            self.db.execute(
                """
                INSERT INTO sel
                SELECT m.seq, m.session_id, m.message_id, m.epoch, l.n, l.n, 1
                FROM latest l JOIN msg m ON m.seq = l.seq WHERE m.match
                """
            )
        self.db.executescript(
            "CREATE INDEX sel_order ON sel(session_id, epoch, message_id, seq);"
            "CREATE INDEX sel_key ON sel(session_id, message_id);"
        )
        invalid = self.db.execute(
            """
            SELECT a.seq FROM att a WHERE a.kind = 'invalid' AND EXISTS (SELECT 1 FROM sel s
                WHERE s.session_id = a.session_id AND s.message_id = a.message_id)
            ORDER BY a.seq
            """
        )
        for (seq,) in invalid:
            self.problem(f"seq {seq}: attachment line with an invalid blob path or hash")

    def counts(self) -> dict[str, int]:
        row = self.db.execute(
            "SELECT COUNT(DISTINCT session_id), COUNT(*), SUM(latest) FROM sel"
        ).fetchone()
        return {"sessions": row[0], "message_lines": row[1], "messages": row[2] or 0}

    def session_summary(self, session_id: str) -> tuple[int, int | None, int | None]:
        """Messages (latest versions), first and last time of one session's selection."""
        messages, first, last = self.db.execute(
            "SELECT SUM(latest), MIN(epoch), MAX(epoch) FROM sel WHERE session_id = ?",
            (_db(session_id),),
        ).fetchone()
        return messages or 0, first, last

    def in_order(self) -> Iterator[Selected]:
        """Selected lines by session, then time, then message, then version."""
        cursor = self.db.execute(
            """
            SELECT s.seq, s.session_id, s.epoch, s.version, s.versions, s.latest,
                m.seg, m.off, m.len, m.sha
            FROM sel s JOIN msg m ON m.seq = s.seq
            ORDER BY s.session_id, s.epoch, s.message_id, s.seq
            """
        )
        for row in cursor:
            yield Selected(row[0], _py(row[1]), row[2], row[3], row[4], bool(row[5]), *row[6:])

    def jsonl_positions(self) -> Iterator[tuple[int, int, int, bytes]]:
        """Selected message lines plus every attachment line of those messages, in seq order.

        Gathered into a table keyed by seq first: reading it back in key order needs no sort,
        where ORDER BY over a UNION would sort a million rows in SQLite's temp area.
        """
        self.db.executescript(
            """
            CREATE TABLE jl(seq INTEGER PRIMARY KEY, seg INTEGER, off INTEGER, len INTEGER,
                sha BLOB);
            INSERT INTO jl SELECT m.seq, m.seg, m.off, m.len, m.sha
                FROM sel s JOIN msg m ON m.seq = s.seq;
            INSERT INTO jl SELECT a.seq, a.seg, a.off, a.len, a.sha FROM att a
                WHERE EXISTS (SELECT 1 FROM sel s WHERE s.session_id = a.session_id
                              AND s.message_id = a.message_id);
            """
        )
        for row in self.db.execute("SELECT seg, off, len, sha FROM jl ORDER BY seq"):
            yield row[0], row[1], row[2], row[3]

    def attachments(self, session_id: str, message_id: str) -> dict[str, AttachmentState]:
        """Per attachment id, the best state: a stored blob beats a failure, later beats earlier."""
        best: dict[str, AttachmentState] = {}
        for key, kind, sha256, size, reason in self.db.execute(
            "SELECT attachment_id, kind, sha256, size, reason FROM att"
            " WHERE session_id = ? AND message_id = ? ORDER BY seq",
            (_db(session_id), _db(message_id)),
        ):
            attachment_id = _py(key)
            known = best.get(attachment_id)
            if known is None or known.kind != "attachment" or kind == "attachment":
                best[attachment_id] = AttachmentState(
                    attachment_id, kind, sha256, _py(size), _py(reason)
                )
        return best


def _db(text: str) -> bytes:
    # A manifest may carry lone surrogates (`"\ud800"`, text cut upstream) in any string, ids
    # included. SQLite's UTF-8 text cannot hold them; these bytes can, compare the same way
    # (UTF-8 byte order is code point order) and decode back to the very same string.
    return text.encode("utf-8", "surrogatepass")


def _py(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _where(line: Line) -> tuple[int, int, int, bytes]:
    return line.segment, line.offset, len(line.raw), line.sha
