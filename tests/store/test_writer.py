"""ManifestWriter: group commit, chain across rotation and reopen, dedupe, failures."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from archiver.errors import StorageError
from archiver.store.manifest import ZERO_HASH, line_hash, record_digest, strip_jwt
from archiver.store.state import State
from archiver.store.verify import verify_archive
from tests.store.conftest import OpenWriter, message, mms, read_lines, segment


def assert_chain(root: Path) -> list[dict[str, Any]]:
    """Every line chains to the one before, seq 1..n, across all segments."""
    prev, seq = ZERO_HASH, 0
    for path in sorted((root / "manifest").glob("*.jsonl")):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n")
        for raw in data.splitlines():
            seq += 1
            line = json.loads(raw)
            assert (line["seq"], line["prev"]) == (seq, prev)
            prev = line_hash(raw)
    report = verify_archive(root)
    assert report.ok, report.problems
    assert report.last_seq == seq
    return read_lines(root)


async def test_lines_are_chained_and_durable(root: Path, open_writer: OpenWriter) -> None:
    writer = await open_writer()
    assert (writer.seq, writer.head) == (0, ZERO_HASH)
    result = await writer.append_messages("s1", [message(1), message(2)], "sync")
    assert (result.new, result.changed, result.unchanged, result.seqs) == (2, 0, 0, (1, 2))
    assert await writer.append_event("start", version="1") == 3
    lines = assert_chain(root)
    assert [line["kind"] for line in lines] == ["message", "message", "event"]
    assert lines[0]["record"] == message(1)
    assert lines[0]["digest"] == record_digest(message(1))
    assert lines[2] == {**lines[2], "event": "start", "version": "1"}
    assert writer.seq == 3
    assert writer.head == line_hash(segment(root).read_bytes().splitlines()[-1])


async def test_concurrent_callers_share_one_fsync(
    root: Path, open_writer: OpenWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await open_writer()
    await writer.append_event("first")  # creates the segment (file + directory fsync)
    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    seqs = await asyncio.gather(*(writer.append_event("e", n=n) for n in range(50)))
    assert len(calls) == 1
    assert sorted(seqs) == list(range(2, 52))
    assert_chain(root)


async def test_rotation_and_reopen_continue_the_chain(
    root: Path, state: State, open_writer: OpenWriter
) -> None:
    writer = await open_writer(segment_max_bytes=700)
    for n in range(6):
        await writer.append_messages("s", [message(n), message(100 + n)], "sync")
    await writer.close()
    closed = {p.name: p.read_bytes() for p in sorted((root / "manifest").iterdir())[:-1]}
    assert len(closed) >= 3
    writer = await open_writer(segment_max_bytes=700)
    assert writer.seq == 12
    await writer.append_messages("s", [message(n) for n in range(200, 210)], "sync")
    lines = assert_chain(root)
    assert [line["seq"] for line in lines] == list(range(1, 23))
    for name, data in closed.items():  # closed segments never change
        assert (root / "manifest" / name).read_bytes() == data
    for path in (root / "manifest").iterdir():
        data = path.read_bytes()
        assert len(data) <= 700 or data.count(b"\n") == 1


async def test_a_line_bigger_than_a_segment_gets_one_of_its_own(
    root: Path, open_writer: OpenWriter
) -> None:
    writer = await open_writer(segment_max_bytes=100)
    await writer.append_messages("s", [message(1, text="x" * 500), message(2)], "sync")
    assert [len(p.read_bytes().splitlines()) for p in sorted((root / "manifest").iterdir())] == [
        1,
        1,
    ]
    assert_chain(root)


async def test_dedupe(root: Path, state: State, open_writer: OpenWriter) -> None:
    writer = await open_writer()
    a, b = message(1), message(2)
    first = await writer.append_messages("s", [a, b], "sync")
    assert (first.new, first.seqs) == (2, (1, 2))

    same = await writer.append_messages("s", [b, a], "sync")
    assert (same.new, same.changed, same.unchanged, same.seqs) == (0, 0, 2, ())

    changed = await writer.append_messages("s", [message(1, text="edited")], "webhook")
    assert (changed.changed, changed.seqs) == (1, (3,))
    assert read_lines(root)[-1]["supersedes"] == 1

    # The same message id in another session is another message.
    other = await writer.append_messages("s2", [a], "sync")
    assert other.new == 1

    twice = await writer.append_messages(
        "s", [message(3), message(3), message(3, text="v2")], "sync"
    )
    assert (twice.new, twice.changed, twice.unchanged) == (1, 1, 1)
    assert read_lines(root)[-1]["supersedes"] == twice.seqs[0]

    assert state.has_message("s", "msg-1") and not state.has_message("s", "msg-9")
    assert state.message_seqs("s", ["msg-1", "msg-3", "nope"]) == {"msg-1": 1, "msg-3": 5}
    session = state.get_session("s")
    assert session is not None and session.messages_archived == 3
    assert_chain(root)


async def test_concurrent_sync_and_webhook_never_duplicate(
    root: Path, open_writer: OpenWriter
) -> None:
    writer = await open_writer()
    pages = [[message(n) for n in range(k, k + 20)] for k in range(0, 60, 10)]
    results = await asyncio.gather(
        *(writer.append_messages("s", page, src) for page in pages for src in ("sync", "webhook"))
    )
    assert sum(r.new for r in results) == 70
    assert len(read_lines(root)) == 70


async def test_jwt_never_reaches_the_manifest(root: Path, open_writer: OpenWriter) -> None:
    writer = await open_writer()
    await writer.append_messages("s", [mms(1, ["a1", "a2"], jwt="SECRETJWT")], "sync")
    again = await writer.append_messages("s", [mms(1, ["a1", "a2"], jwt="OTHERJWT")], "sync")
    assert again.unchanged == 1
    assert b"SECRETJWT" not in segment(root).read_bytes()
    assert read_lines(root)[0]["record"] == strip_jwt(mms(1, ["a1", "a2"]))


async def test_bad_input_raises_before_anything_is_written(
    root: Path, open_writer: OpenWriter
) -> None:
    writer = await open_writer()
    for records, source in (
        ([message(1), {"message": "no id"}], "sync"),
        ([message(1), {"message_id": 7}], "sync"),
        ([message(1)], "email"),
    ):
        with pytest.raises(ValueError):
            await writer.append_messages("s", records, source)
    with pytest.raises(ValueError):
        await writer.append_messages("", [message(1)], "sync")
    assert writer.seq == 0
    assert not segment(root).exists()


async def test_a_bad_request_does_not_spoil_its_batch(root: Path, open_writer: OpenWriter) -> None:
    writer = await open_writer()
    results = await asyncio.gather(
        writer.append_messages("s", [message(1)], "sync"),
        writer.append_messages("s", [message(2), message(3, value=float("nan"))], "sync"),
        writer.append_messages("s", [message(4)], "sync"),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert [r.seqs for r in (results[0], results[2])] == [(1,), (2,)]  # type: ignore[union-attr]
    assert [line["message_id"] for line in assert_chain(root)] == ["msg-1", "msg-4"]


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"kind": "message"}, "append_messages"),
        ({"kind": "event"}, "event is missing"),
        ({"kind": "event", "event": "x", "seq": 3}, "writer's to fill in"),
        ({"kind": "event", "event": "x", "data": b"bytes"}, "JSON"),
        (
            {
                "kind": "attachment",
                "session_id": "s",
                "message_id": "m",
                "attachment_id": "a",
                "name": "../../etc/passwd",
                "type": "PNG",
                "size": 1,
                "sha256": "a" * 64,
                "blob": "../../etc/passwd",
            },
            "blob must be",
        ),
    ],
)
async def test_append_entries_validates(
    open_writer: OpenWriter, entry: dict[str, Any], match: str
) -> None:
    writer = await open_writer()
    with pytest.raises(ValueError, match=match):
        await writer.append_entries([entry])
    assert writer.seq == 0


async def test_event_details_cannot_override_kind(open_writer: OpenWriter) -> None:
    writer = await open_writer()
    with pytest.raises(ValueError):
        await writer.append_event("x", kind="message")


async def test_failed_fsync_stops_the_writer_for_good(
    root: Path, state: State, open_writer: OpenWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await open_writer()
    await writer.append_messages("s", [message(1)], "sync")
    before = segment(root).read_bytes()
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    # Mocked: EIO cannot be had from a real disk on demand.
    monkeypatch.setattr(os, "fsync", failing_fsync)
    results = await asyncio.gather(
        *(writer.append_messages("s", [message(n)], "sync") for n in range(2, 6)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StorageError) and r.errno == errno.EIO for r in results)
    assert writer.failed
    monkeypatch.setattr(os, "fsync", real_fsync)
    # Never retried, even once the disk "works" again.
    with pytest.raises(StorageError):
        await writer.append_event("after")
    assert segment(root).read_bytes() == before  # cut back to the last committed length
    await writer.close()

    writer = await open_writer()
    assert writer.seq == 1
    result = await writer.append_messages("s", [message(n) for n in range(1, 6)], "sync")
    assert (result.new, result.unchanged) == (4, 1)
    assert_chain(root)


async def test_failed_write_is_storage_error(
    root: Path, open_writer: OpenWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await open_writer()

    def full_disk(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StorageError) as caught:
        await writer.append_event("x")
    assert caught.value.errno == errno.ENOSPC
    assert "000001.jsonl" in str(caught.value)


async def test_caller_cancelled_before_its_turn_writes_nothing(
    root: Path, open_writer: OpenWriter
) -> None:
    writer = await open_writer()
    task = asyncio.create_task(writer.append_event("withdrawn"))
    await asyncio.sleep(0)  # the request is queued, the writer not yet run
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await writer.append_event("kept") == 1
    assert [line["event"] for line in read_lines(root)] == ["kept"]


async def test_close_commits_what_is_queued(root: Path, open_writer: OpenWriter) -> None:
    writer = await open_writer()
    tasks = [asyncio.create_task(writer.append_event("e", n=n)) for n in range(10)]
    await asyncio.sleep(0)
    await writer.close()
    assert sorted([await t for t in tasks]) == list(range(1, 11))
    with pytest.raises(RuntimeError, match="closed"):
        await writer.append_event("late")
    assert len(read_lines(root)) == 10


async def test_requests_in_one_batch_see_each_other(root: Path, open_writer: OpenWriter) -> None:
    writer = await open_writer()
    first, second, third = await asyncio.gather(
        writer.append_messages("s", [message(1)], "webhook"),
        writer.append_messages("s", [message(1, text="sync shape")], "sync"),
        writer.append_messages("s", [message(1)], "webhook"),  # a retried webhook
    )
    assert (first.new, second.changed, third.unchanged) == (1, 1, 1)
    assert read_lines(root)[1]["supersedes"] == first.seqs[0]
