"""What `verify` checks across lines: the rules no single line can break on its own.

- one line per distinct content: no two message lines with the same (session_id, message_id,
  digest);
- `supersedes` names an earlier message line of the same session and message;
- every attachment a message's record lists ends as an `attachment` or `attachment_failed`
  line (or is still pending in the state's ledger: `verify` says which).

The facts live in a temporary on-disk SQLite database (deleted on close), so memory stays
flat however long the manifest is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

_DDL = """
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY, session_id TEXT NOT NULL, message_id TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_content ON messages (session_id, message_id, digest);
CREATE TABLE listed (
    session_id TEXT NOT NULL, message_id TEXT NOT NULL, attachment_id TEXT NOT NULL,
    seq INTEGER NOT NULL,  -- the first message line that lists it
    PRIMARY KEY (session_id, message_id, attachment_id)
) WITHOUT ROWID;
CREATE TABLE settled (
    session_id TEXT NOT NULL, message_id TEXT NOT NULL, attachment_id TEXT NOT NULL,
    PRIMARY KEY (session_id, message_id, attachment_id)
) WITHOUT ROWID;
"""


def listed_attachment_ids(record: Mapping[str, Any]) -> list[str]:
    """The ids of the attachments a message record lists (items with a non-empty string id:
    the same rule the download ledger uses)."""
    items = record.get("attachments")
    if not isinstance(items, list):
        return []
    return [
        item["id"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    ]


class CrossCheck:
    def __init__(self) -> None:
        self.db = sqlite3.connect("")  # "": a private temporary file, gone on close
        self.db.executescript(_DDL)

    def close(self) -> None:
        self.db.close()

    def message(self, line: Mapping[str, Any]) -> list[str]:
        """Record a well-formed message line; the cross-line problems it has."""
        seq, sid, mid, digest = line["seq"], line["session_id"], line["message_id"], line["digest"]
        problems = []
        twin = self.db.execute(
            "SELECT seq FROM messages WHERE session_id = ? AND message_id = ? AND digest = ?",
            (sid, mid, digest),
        ).fetchone()
        if twin is not None:
            problems.append(f"duplicate of line seq {twin[0]} (same session, message and digest)")
        supersedes = line.get("supersedes")
        if supersedes is not None:
            target = self.db.execute(
                "SELECT session_id, message_id FROM messages WHERE seq = ?", (supersedes,)
            ).fetchone()
            if target is None:
                problems.append(f"supersedes {supersedes}, which is not a message line")
            elif tuple(target) != (sid, mid):
                problems.append(
                    f"supersedes {supersedes}, a line of another message ({target[1]!r} in "
                    f"session {target[0]!r})"
                )
        self.db.execute(
            "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?)", (seq, sid, mid, digest)
        )
        self.db.executemany(
            "INSERT OR IGNORE INTO listed VALUES (?, ?, ?, ?)",
            [(sid, mid, aid, seq) for aid in listed_attachment_ids(line["record"])],
        )
        return problems

    def settled(self, line: Mapping[str, Any]) -> None:
        """An attachment or attachment_failed line: that attachment has its end."""
        self.db.execute(
            "INSERT OR IGNORE INTO settled VALUES (?, ?, ?)",
            (line["session_id"], line["message_id"], line["attachment_id"]),
        )

    def unsettled(self) -> Iterator[tuple[str, str, str, int]]:
        """(session_id, message_id, attachment_id, seq of the listing line) with no end yet."""
        yield from self.db.execute(
            "SELECT l.session_id, l.message_id, l.attachment_id, l.seq FROM listed l "
            "WHERE NOT EXISTS (SELECT 1 FROM settled s WHERE s.session_id = l.session_id "
            "AND s.message_id = l.message_id AND s.attachment_id = l.attachment_id) "
            "ORDER BY l.seq"
        )
