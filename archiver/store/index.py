"""The writer's side of state.sqlite3: what the manifest holds, in a form quick to look up.

`apply()` turns manifest lines into index rows and is the ONLY way those rows change, both for
lines just written and for lines replayed at start-up: so a deleted or lagging state file is
rebuilt into exactly what live operation would have produced. Per line it records:
- message: its digest (dedupe), one more archived message for the session unless it supersedes,
  and a pending download job for each attachment the record lists;
- attachment / attachment_failed: the job's final status.

Used from the writer's thread only, on a connection of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from archiver.store.manifest import ZERO_HASH
from archiver.store.schema import clear, connect, transaction

Line = Mapping[str, Any]
# SQLite's default limit on host parameters is 32766 since 3.32; stay well below older limits.
_IN_CHUNK: Final = 500


class ManifestIndex:
    """Dedupe index and ledger facts, with the (seq, head) of the last line they reflect."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)

    def close(self) -> None:
        self._conn.close()

    def position(self) -> tuple[int, str]:
        """(seq, head) of the last manifest line applied; (0, ZERO_HASH) for none."""
        row = self._conn.execute("SELECT seq, head FROM manifest_index").fetchone()
        return (0, ZERO_HASH) if row is None else (int(row[0]), str(row[1]))

    def reset(self) -> None:
        """Forget everything: the state is ahead of, or differs from, the manifest."""
        clear(self._conn)

    def versions(
        self, session_id: str, message_ids: Iterable[str]
    ) -> dict[str, list[tuple[str, int]]]:
        """message_id -> [(digest, seq)] of every archived version, for the ids given."""
        ids = list(dict.fromkeys(message_ids))
        found: dict[str, list[tuple[str, int]]] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            rows = self._conn.execute(
                "SELECT message_id, digest, seq FROM messages WHERE session_id = ? "  # noqa: S608
                f"AND message_id IN ({', '.join('?' * len(chunk))})",
                (session_id, *chunk),
            )
            for message_id, digest, seq in rows:
                found.setdefault(message_id, []).append((digest, seq))
        return found

    def apply(self, lines: Iterable[Line], seq: int, head: str) -> None:
        """Apply parsed manifest lines and move the position to (seq, head), in one transaction."""
        messages: list[tuple[str, str, str, int]] = []
        new_per_session: Counter[str] = Counter()
        jobs: list[tuple[Any, ...]] = []
        finished: list[tuple[Any, ...]] = []
        for line in lines:
            kind = line["kind"]
            if kind == "message":
                sid, mid = _sql_text(line["session_id"]), _sql_text(line["message_id"])
                messages.append((sid, mid, line["digest"], line["seq"]))
                if "supersedes" not in line:
                    new_per_session[sid] += 1
                jobs.extend(
                    (sid, mid, *attachment, line["at"])
                    for attachment in _listed_attachments(line["record"])
                )
            elif kind in ("attachment", "attachment_failed"):
                done = kind == "attachment"
                finished.append(
                    (
                        *(
                            _sql_text(line[k])
                            for k in ("session_id", "message_id", "attachment_id")
                        ),
                        *(_nullable(line[key]) for key in ("name", "type", "size")),
                        line["at"],
                        "done" if done else "failed",
                        0 if done else line["attempts"],
                        None if done else line["reason"],
                        line["seq"],
                    )
                )
        with transaction(self._conn) as conn:
            conn.executemany("INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?)", messages)
            conn.executemany(
                "INSERT INTO sessions (session_id, messages_archived) VALUES (?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET "
                "messages_archived = messages_archived + excluded.messages_archived",
                new_per_session.items(),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO attachments (session_id, message_id, attachment_id, "
                "name, type, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                jobs,
            )
            conn.executemany(
                "INSERT INTO attachments (session_id, message_id, attachment_id, name, type, "
                "size, created_at, status, attempts, last_error, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "status = excluded.status, attempts = max(attempts, excluded.attempts), "
                "last_error = excluded.last_error, seq = excluded.seq",
                finished,
            )
            conn.execute("UPDATE manifest_index SET seq = ?, head = ?", (seq, head))


# What SQLite's INTEGER holds; Python's sqlite3 raises OverflowError beyond it.
_INT64: Final = range(-(2**63), 2**63)


def _sql_text(value: str) -> str:
    """`value` in a form SQLite can store. JSON may carry a lone surrogate (text cut inside a
    UTF-16 pair) that UTF-8 cannot: it is kept as its backslash escape. Everything `apply`
    stores must fit, or one odd line that `verify` accepts would stop the writer, and the
    start-up replay of that same line would stop every later start."""
    if value.isascii():  # the common case, and no surrogate is ASCII
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _nullable(value: Any) -> Any:
    # name/type/size are stored for the operator's `status` view; what does not fit is NULL.
    if isinstance(value, str):
        return _sql_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in _INT64:
        return value
    return None


def _listed_attachments(record: Mapping[str, Any]) -> list[tuple[Any, Any, Any, Any]]:
    """(id, name, type, size) of each attachment a message record lists with a usable id."""
    listed = record.get("attachments")
    if not isinstance(listed, list):
        return []
    return [
        (
            _sql_text(item["id"]),
            _nullable(item.get("name")),
            _nullable(item.get("type")),
            _nullable(item.get("size")),
        )
        for item in listed
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    ]
