"""Start-up: torn tail repair, corruption detection, and the index rebuilt from the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from archiver.errors import ManifestCorruptError
from archiver.store.manifest import ZERO_HASH, encode_line, line_hash
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import OpenWriter, message, mms, read_lines, segment


async def fill(open_writer: OpenWriter, n: int = 4, **kwargs: int) -> None:
    writer = await open_writer(**kwargs)
    for i in range(n):
        await writer.append_messages("s", [message(i)], "sync")
    await writer.close()


def not_chaining_line(seq: int) -> bytes:
    return encode_line({"kind": "event", "event": "x"}, seq, "f" * 64, "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "tail",
    [
        b'{"at":"2026-01-01T00:00:00Z","kind":"mess',  # crash mid-append
        b"\x00\x00\x00\x00",  # size extended, data never written
        b"garbage\n",  # a whole last line that is not JSON
        b"[1,2]\n",
        not_chaining_line(5) + b"\n",  # valid JSON that does not chain
        not_chaining_line(9) + b"\n",
        b"garbage\n" + b'{"partial',  # one bad line plus the fragment after it
    ],
)
async def test_torn_tail_is_cut_and_recorded(
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
        "seq": 5,
    }
    assert verify_archive(root).ok


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
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:2: seq 3 where 2 was expected"):
        await open_writer()
    assert segment(root).read_bytes() == before


async def test_edited_line_breaks_the_next_link(root: Path, open_writer: OpenWriter) -> None:
    await fill(open_writer)
    lines = segment(root).read_bytes().splitlines()
    lines[1] = lines[1].replace(b"hello 1", b"HELLO 1")
    rewrite(segment(root), lines)
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:3: prev"):
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
    with pytest.raises(ManifestCorruptError, match=r"000001\.jsonl:5: kind 'note'"):
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
    await writer.close()
    state.close()
    for suffix in ("", "-wal", "-shm"):
        (root / f"state.sqlite3{suffix}").unlink(missing_ok=True)

    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        assert writer.seq == 35
        again = await writer.append_messages("s", [*records, message(1, text="changed")], "sync")
        assert (again.new, again.changed, again.unchanged) == (0, 0, 33)
        assert writer.seq == 35
        assert state.attachment_counts() == ledger == {"pending": 1, "done": 1, "failed": 1}
        assert [j.attachment_id for j in state.pending_attachments()] == ["b1"]
        session = state.get_session("s")
        assert session is not None
        assert (session.messages_archived, session.newest_token) == (32, None)
    finally:
        await writer.close()
        state.close()


async def test_state_ahead_of_the_manifest_is_discarded(root: Path, tmp_path: Path) -> None:
    """A manifest restored from an older backup: the cache must not claim what it lacks."""
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    await writer.append_messages("s", [message(1), message(2)], "sync")
    backup = tmp_path / "backup"
    shutil.copytree(root / "manifest", backup)
    await writer.append_messages("s", [message(3)], "sync")
    state.save_sync_tokens("s", newest_token="after-msg-3")
    await writer.close()
    shutil.rmtree(root / "manifest")
    shutil.copytree(backup, root / "manifest")

    writer = await ManifestWriter.open(root, state)
    try:
        assert writer.seq == 2
        assert state.get_session("s").newest_token is None  # type: ignore[union-attr]
        result = await writer.append_messages("s", [message(n) for n in (1, 2, 3)], "sync")
        assert (result.new, result.unchanged) == (1, 2)
        assert verify_archive(root).ok
    finally:
        await writer.close()
        state.close()


async def test_state_on_another_chain_is_discarded(root: Path, tmp_path: Path) -> None:
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    await writer.append_messages("s", [message(1)], "sync")
    await writer.close()
    # Same length, different content: a manifest from another root with this state.
    other = encode_line({"kind": "event", "event": "other"}, 1, ZERO_HASH, "2026-01-01T00:00:00Z")
    segment(root).write_bytes(other + b"\n")
    writer = await ManifestWriter.open(root, state)
    try:
        assert writer.head == line_hash(other)
        assert not state.has_message("s", "msg-1")
    finally:
        await writer.close()
        state.close()
