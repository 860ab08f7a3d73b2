"""State: sessions, sync tokens, key/values, the download ledger, and cache rebuilds."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from archiver.store.schema import SCHEMA_VERSION
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.store.conftest import mms


def test_file_is_private(root: Path, state: State) -> None:
    assert stat.S_IMODE((root / "state.sqlite3").stat().st_mode) == 0o600
    state.set_meta("k", "v")
    wal = root / "state.sqlite3-wal"
    assert not wal.exists() or stat.S_IMODE(wal.stat().st_mode) == 0o600


def test_sessions(state: State) -> None:
    assert state.get_session("s1") is None
    state.upsert_session("s1", session_type="user", last_message_time="2024-01-02T00:00:00Z")
    state.upsert_session("s1", last_message_time="2024-02-01T00:00:00Z")  # type kept
    state.upsert_session("s2")
    s1 = state.get_session("s1")
    assert s1 is not None
    assert (s1.session_type, s1.last_message_time) == ("user", "2024-02-01T00:00:00Z")
    assert (s1.backfill_done, s1.gone, s1.newest_token, s1.messages_archived) == (
        False,
        False,
        None,
        0,
    )


def test_sync_tokens_change_only_what_is_given(state: State) -> None:
    state.save_sync_tokens("s", newest_token="n1", oldest_token="o1")
    state.save_sync_tokens("s", newest_token="n2")
    s = state.get_session("s")
    assert s is not None and (s.newest_token, s.oldest_token, s.backfill_done) == (
        "n2",
        "o1",
        False,
    )
    assert s.last_sync_at is not None
    state.save_sync_tokens("s", oldest_token=None, backfill_done=True)  # None clears
    s = state.get_session("s")
    assert s is not None and (s.newest_token, s.oldest_token, s.backfill_done) == ("n2", None, True)


def test_session_filters_and_paging(state: State) -> None:
    for n in range(1203):
        state.upsert_session(f"s{n:05d}", last_message_time=f"2024-01-{1 + n % 28:02d}T00:00:00Z")
    state.save_sync_tokens("s00001", backfill_done=True)
    state.mark_gone("s00002", "404 12004")
    assert len(list(state.sessions())) == 1202
    assert len(list(state.sessions(include_gone=True))) == 1203
    assert [s.session_id for s in state.sessions(backfill_done=True)] == ["s00001"]
    recent = list(state.sessions(active_since="2024-01-28T00:00:00Z"))
    assert recent and all(s.last_message_time >= "2024-01-28" for s in recent)  # type: ignore[operator]
    gone = state.get_session("s00002")
    assert gone is not None and gone.gone


def test_meta(state: State) -> None:
    assert state.get_meta("discovery_watermark") is None
    state.set_meta("discovery_watermark", "a")
    state.set_meta("discovery_watermark", "b")
    assert state.get_meta("discovery_watermark") == "b"


async def test_ledger(root: Path, state: State) -> None:
    writer = await ManifestWriter.open(root, state)
    try:
        await writer.append_messages("s", [mms(1, ["a", "b"]), mms(2, ["c"])], "sync")
    finally:
        await writer.close()
    assert state.attachment_counts() == {"pending": 3, "done": 0, "failed": 0}
    assert state.attachment_pending("s", "msg-1", "a")
    assert not state.attachment_pending("s", "msg-1", "zzz")
    state.enqueue_attachment("s", "msg-1", "b", name="b.png", type="PNG", size=10, exp=100)
    state.enqueue_attachment("s", "msg-2", "c", name="c.png", type="PNG", size=10, exp=50)
    state.enqueue_attachment("s", "msg-1", "b", name="b.png", type="PNG", size=10, exp=100)
    jobs = state.pending_attachments()
    assert [(j.attachment_id, j.exp) for j in jobs] == [("a", None), ("c", 50), ("b", 100)]
    assert len(state.pending_attachments(limit=1)) == 1
    state.mark_attachment("s", "msg-1", "a", error="timeout")
    (job,) = [j for j in state.pending_attachments() if j.attachment_id == "a"]
    assert (job.status, job.attempts, job.last_error) == ("pending", 1, "timeout")
    assert job.name == "a.png" and job.size == 10


def test_unknown_schema_version_rebuilds_the_cache(root: Path) -> None:
    state = State.open(root)
    state.set_meta("k", "v")
    state.close()
    conn = sqlite3.connect(root / "state.sqlite3")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE leftovers (x)")
    conn.commit()
    conn.close()
    state = State.open(root)
    assert state.get_meta("k") is None
    state.close()
    conn = sqlite3.connect(root / "state.sqlite3")
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "leftovers" not in tables
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_unreadable_file_is_replaced(root: Path) -> None:
    (root / "state.sqlite3").write_bytes(b"this is not a database" * 100)
    state = State.open(root)
    state.set_meta("k", "v")
    assert state.get_meta("k") == "v"
    state.close()
