"""Start-up: torn tail repair, corruption detection, and the index rebuilt from the manifest."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from archiver.errors import ManifestCorruptError
from archiver.store import checkpoint
from archiver.store.checkpointer import Checkpointer
from archiver.store.manifest import ZERO_HASH, canonical, encode_line, line_hash, record_digest
from archiver.store.schema import transaction
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import OpenWriter, message, mms, read_lines, segment


async def fill(open_writer: OpenWriter, n: int = 4, **kwargs: int) -> None:
    writer = await open_writer(**kwargs)
    for i in range(n):
        await writer.append_messages("s", [message(i)], "sync")
    await writer.close()


@pytest.mark.parametrize(
    "tail",
    [
        b'{"at":"2026-01-01T00:00:00Z","kind":"mess',  # crash mid-append
        b"\x00\x00\x00\x00",  # size extended, data never written
        b'{"at":"2026-01-01T00:00:00Z","ki\x00\x00\x00',  # the end of the write zeroed
        b"garbage\n",  # a whole last line that is not JSON
        b"\x00\x00\x00\x00\n",
        b"\xff\xfe\n",  # not even UTF-8
    ],
)
async def test_torn_tail_is_moved_to_recovered_and_recorded(
    root: Path, open_writer: OpenWriter, tail: bytes
) -> None:
    await fill(open_writer)
    whole = segment(root).read_bytes()
    with segment(root).open("ab") as f:
        f.write(tail)
    writer = await open_writer()
    assert writer.seq == 5
    data = segment(root).read_bytes()
    assert data.startswith(whole)
    event = json.loads(data[len(whole) :])
    assert event == {
        **event,
        "kind": "event",
        "event": "torn_tail_repaired",
        "segment": "000001.jsonl",
        "bytes_removed": len(tail),
        "sha256": hashlib.sha256(tail).hexdigest(),
        "seq": 5,
    }
    # The cut bytes are kept, byte for byte, where the event says.
    assert event["recovered"].startswith("recovered/") and event["recovered"].endswith(".tail")
    assert [p.name for p in (root / "recovered").iterdir()] == [event["recovered"][10:]]
    assert (root / event["recovered"]).read_bytes() == tail
    assert verify_archive(root).ok


def not_chaining_line(seq: int) -> bytes:
    return encode_line({"kind": "event", "event": "x"}, seq, "f" * 64, "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        # Complete lines that are JSON were written whole: no crash makes them.
        (b"[1,2]\n", r"000001\.jsonl:5 \(seq 5\): not a JSON object"),
        (not_chaining_line(5) + b"\n", r"000001\.jsonl:5 \(seq 5\): prev"),
        (not_chaining_line(9) + b"\n", r"000001\.jsonl:5 \(seq 5\): seq 9 where 5"),
        # Only the final line may be torn: a bad whole line with more after it is not.
        (b"garbage\n" + b'{"partial', r"000001\.jsonl:5 \(seq 5\): not JSON, and more lines"),
        (b"garbage\ngarbage\n", r"000001\.jsonl:5 \(seq 5\): not JSON, and more lines"),
    ],
)
async def test_a_complete_line_is_never_cut(
    root: Path, open_writer: OpenWriter, tail: bytes, problem: str
) -> None:
    await fill(open_writer)
    with segment(root).open("ab") as f:
        f.write(tail)
    before = segment(root).read_bytes()
    with pytest.raises(ManifestCorruptError, match=problem):
        await open_writer()
    assert segment(root).read_bytes() == before
    assert not (root / "recovered").exists()


async def test_edited_next_to_last_line_stops_the_start(
    root: Path, open_writer: OpenWriter
) -> None:
    """Issue 15: an edit of line N-1, its digest recomputed, used to make start-up cut the
    good line N as a "torn tail" and verify pass with the edit in place."""
    await fill(open_writer)
    lines = segment(root).read_bytes().splitlines()
    edited = json.loads(lines[-2])
    edited["record"]["message"] = "forged"
    edited["digest"] = record_digest(edited["record"])
    lines[-2] = canonical(edited)
    rewrite(segment(root), lines)
    before = segment(root).read_bytes()
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:4 \(seq 4\): prev") as err:
        await open_writer()
    assert "verify" in str(err.value) and "restore" in str(err.value)
    assert segment(root).read_bytes() == before
    report = verify_archive(root)
    assert not report.ok
    assert [(p.kind, p.segment, p.line, p.seq) for p in report.problems] == [
        ("chain_broken", "000001.jsonl", 4, 4)
    ]


async def test_a_well_formed_line_with_a_wrong_prev_stops_the_start(
    root: Path, open_writer: OpenWriter
) -> None:
    await fill(open_writer)
    forged = encode_line({"kind": "event", "event": "stop"}, 5, "0" * 64, "2026-01-01T00:00:00Z")
    with segment(root).open("ab") as f:
        f.write(forged + b"\n")
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:5 \(seq 5\): prev"):
        await open_writer()
    assert segment(root).read_bytes().endswith(forged + b"\n")
    assert not verify_archive(root).ok


async def test_whole_tail_needs_no_repair(root: Path, open_writer: OpenWriter) -> None:
    await fill(open_writer)
    writer = await open_writer()
    assert writer.seq == 4
    assert len(read_lines(root)) == 4


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


async def test_corruption_in_the_middle_is_never_repaired(
    root: Path, open_writer: OpenWriter
) -> None:
    await fill(open_writer)
    lines = segment(root).read_bytes().splitlines()
    rewrite(segment(root), lines[:1] + lines[2:])  # line seq 2 deleted
    before = segment(root).read_bytes()
    expected = r"000001\.jsonl:2 \(seq 2\): seq 3 where 2 was expected"
    with pytest.raises(ManifestCorruptError, match=expected):
        await open_writer()
    assert segment(root).read_bytes() == before


async def test_edited_line_breaks_the_next_link(root: Path, open_writer: OpenWriter) -> None:
    await fill(open_writer)
    lines = segment(root).read_bytes().splitlines()
    lines[1] = lines[1].replace(b"hello 1", b"HELLO 1")
    rewrite(segment(root), lines)
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:3 \(seq 3\): prev"):
        await open_writer()


async def test_bad_line_followed_by_good_ones(root: Path, open_writer: OpenWriter) -> None:
    await fill(open_writer)
    lines = segment(root).read_bytes().splitlines()
    rewrite(segment(root), [*lines[:3], b"garbage", lines[3]])
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:4"):
        await open_writer()


async def test_a_chained_line_of_unknown_kind_is_not_cut(
    root: Path, open_writer: OpenWriter
) -> None:
    """A last line that chains was written whole: it may be from a newer archiver version."""
    await fill(open_writer)
    last = segment(root).read_bytes().splitlines()[-1]
    line = encode_line({"kind": "note", "text": "x"}, 5, line_hash(last), "2026-01-01T00:00:00Z")
    with segment(root).open("ab") as f:
        f.write(line + b"\n")
    before = segment(root).read_bytes()
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:5 \(seq 5\): kind 'note'"):
        await open_writer()
    assert segment(root).read_bytes() == before


async def test_missing_segment(root: Path, open_writer: OpenWriter) -> None:
    await fill(open_writer, 6, segment_max_bytes=300)
    segment(root, 2).unlink()
    with pytest.raises(ManifestCorruptError, match=r"000002\.jsonl"):
        await open_writer()


@pytest.mark.parametrize("wipe_state", [False, True])
async def test_unterminated_closed_segment(
    root: Path, state: State, open_writer: OpenWriter, wipe_state: bool
) -> None:
    await fill(open_writer, 6, segment_max_bytes=300)
    segments = sorted((root / "manifest").iterdir())
    # With the index up to date only the segment before the last is read at start; without
    # it the whole manifest is replayed. Earlier damage is for `verify` to find.
    damaged = segments[0] if wipe_state else segments[-2]
    damaged.write_bytes(damaged.read_bytes()[:-1])
    if wipe_state:
        (root / "state.sqlite3").unlink()
        state = State.open(root)
    with pytest.raises(ManifestCorruptError, match=damaged.name.replace(".", r"\.")):
        await ManifestWriter.open(root, state)
    state.close()


async def test_empty_last_segment_is_appended_to(root: Path, open_writer: OpenWriter) -> None:
    await fill(open_writer, 3, segment_max_bytes=300)
    last = max((root / "manifest").iterdir())
    empty = last.with_name(f"{int(last.stem) + 1:06d}.jsonl")
    empty.touch()  # a crash right after creating the next segment
    writer = await open_writer(segment_max_bytes=300)
    await writer.append_event("next")
    assert empty.read_bytes().count(b"\n") == 1
    assert verify_archive(root).ok


async def test_deleted_state_is_rebuilt_from_the_manifest(root: Path, tmp_path: Path) -> None:
    state = State.open(root)
    writer = await ManifestWriter.open(root, state, segment_max_bytes=2000)
    records = [message(n) for n in range(30)] + [mms(100, ["a1", "a2"]), mms(101, ["b1"])]
    await writer.append_messages("s", records, "sync")
    await writer.append_messages("s", [message(1, text="changed")], "sync")
    blob = "ab" * 32
    await writer.append_entries(
        [
            {
                "kind": "attachment",
                "session_id": "s",
                "message_id": "msg-100",
                "attachment_id": "a1",
                "name": "a1.png",
                "type": "PNG",
                "size": 10,
                "sha256": blob,
                "blob": f"blobs/sha256/ab/{blob}",
            },
            {
                "kind": "attachment_failed",
                "session_id": "s",
                "message_id": "msg-100",
                "attachment_id": "a2",
                "name": "a2.png",
                "type": "PNG",
                "size": 10,
                "reason": "gone upstream",
                "attempts": 3,
            },
        ]
    )
    state.save_sync_tokens("s", newest_token="tok")
    ledger = state.attachment_counts()
    head = writer.head
    await writer.close()
    state.close()
    remove_state(root)

    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        assert writer.seq == 36
        assert read_lines(root)[-1] == {
            **read_lines(root)[-1],
            "event": "state_rebuilt",
            "old_seq": None,  # nothing outside the state remembered it (no checkpoints)
            "old_head": None,
            "new_seq": 35,
            "new_head": head,
        }
        again = await writer.append_messages("s", [*records, message(1, text="changed")], "sync")
        assert (again.new, again.changed, again.unchanged) == (0, 0, 33)
        assert writer.seq == 36
        assert state.attachment_counts() == ledger == {"pending": 1, "done": 1, "failed": 1}
        assert [j.attachment_id for j in state.pending_attachments()] == ["b1"]
        session = state.get_session("s")
        assert session is not None
        assert (session.messages_archived, session.newest_token) == (32, None)
    finally:
        await writer.close()
        state.close()


def remove_state(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (root / f"state.sqlite3{suffix}").unlink(missing_ok=True)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        # The open State's own scratch files are SQLite's business, not the archive's.
        if p.is_file() and p.name not in ("LOCK", "state.sqlite3-wal", "state.sqlite3-shm")
    }


async def test_whole_lines_cut_from_the_end_stop_the_start(root: Path, tmp_path: Path) -> None:
    """Issue 15: a manifest truncated by whole lines while the state remembers more used to
    be accepted (the cache discarded, the chain continued from the shorter end)."""
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    await writer.append_messages("s", [message(1), message(2)], "sync")
    await writer.append_messages("s", [message(3)], "sync")
    old_head = writer.head
    key = checkpoint.load_private_key(
        checkpoint.generate_keypair(tmp_path / "keys")[0].read_bytes()
    )
    await Checkpointer(root, key, checkpoint.origin_for("a"), writer).write()  # seq 3
    note = (root / "checkpoints" / checkpoint.note_name(3)).read_bytes()
    await writer.close()
    lines = segment(root).read_bytes().splitlines()
    rewrite(segment(root), lines[:2])
    before = snapshot(root)
    with pytest.raises(ManifestCorruptError) as err:
        await ManifestWriter.open(root, state)
    text = str(err.value)
    assert "manifest/000001.jsonl:2 (seq 2): the manifest ends here" in text
    assert "state.sqlite3 has seen up to seq 3" in text and "remove ROOT/state.sqlite3" in text
    assert snapshot(root) == before
    state.close()

    # Knowingly: the operator removes the state; the rebuild is on the record.
    remove_state(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        event = read_lines(root)[-1]
        assert event["event"] == "state_rebuilt"
        assert (event["new_seq"], event["new_head"]) == (2, line_hash(lines[1]))
        # What the archive last attested (its signed note), not what the shorter chain says
        assert (event["old_seq"], event["old_head"]) == (3, old_head)
        (aside,) = event["checkpoints_set_aside"]  # the note for seq 3: kept, not overwritten
        assert (root / aside["path"]).read_bytes() == note
    finally:
        await writer.close()
        state.close()


async def test_deleted_last_segment_stops_the_start(root: Path, open_writer: OpenWriter) -> None:
    await fill(open_writer, 6, segment_max_bytes=300)
    segments = sorted((root / "manifest").iterdir())
    assert len(segments) > 2
    segments[-1].unlink()
    before = snapshot(root)
    with pytest.raises(ManifestCorruptError, match=r"state\.sqlite3 has seen up to seq 6"):
        await open_writer(segment_max_bytes=300)
    assert snapshot(root) == before


async def test_state_on_another_chain_stops_the_start(root: Path, tmp_path: Path) -> None:
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    await writer.append_messages("s", [message(1)], "sync")
    await writer.close()
    # Same length, different content: a manifest from another root with this state.
    other = encode_line({"kind": "event", "event": "other"}, 1, ZERO_HASH, "2026-01-01T00:00:00Z")
    segment(root).write_bytes(other + b"\n")
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:1 \(seq 1\): hashes to"):
        await ManifestWriter.open(root, state)
    assert segment(root).read_bytes() == other + b"\n"
    state.close()


async def test_a_crash_before_the_first_index_update_is_no_rebuild(
    root: Path, open_writer: OpenWriter, state: State
) -> None:
    """An index at seq 0 that a writer opened before is merely behind: replayed, not rebuilt."""
    writer = await open_writer()
    await writer.append_messages("s", [message(1)], "sync")
    await writer.close()
    with transaction(sqlite3.connect(root / "state.sqlite3", isolation_level=None)) as conn:
        conn.execute("UPDATE manifest_index SET seq = 0, head = ?", (ZERO_HASH,))
        conn.execute("DELETE FROM messages")
    writer = await open_writer()
    assert writer.seq == 1
    assert state.has_message("s", "msg-1")
