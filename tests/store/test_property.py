"""Property: any sequence of appends, reopens, lost state files and torn tails keeps the archive
valid, every distinct content archived exactly once, and the dedupe counts right."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message, read_lines

records = st.lists(
    st.tuples(st.integers(0, 7), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=6
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(["s1", "s2"]), records),
        st.tuples(st.just("event")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("lose_state")),
        st.tuples(
            st.just("tear"), st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b)
        ),
    ),
    max_size=12,
)


async def play(root: Path, ops: list[tuple[Any, ...]]) -> None:
    prepare_root(root)
    contents: set[tuple[str, int, str]] = set()
    messages: set[tuple[str, int]] = set()
    state = State.open(root)
    writer = await ManifestWriter.open(root, state, segment_max_bytes=900)

    async def reopen(lose_state: bool = False, tear: bytes = b"") -> None:
        nonlocal state, writer
        await writer.close()
        state.close()
        if lose_state:
            for suffix in ("", "-wal", "-shm"):
                (root / f"state.sqlite3{suffix}").unlink(missing_ok=True)
        if tear:
            with max((root / "manifest").iterdir()).open("ab") as f:
                f.write(tear)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state, segment_max_bytes=900)

    for op in ops:
        if op[0] == "append":
            _, sid, batch = op
            expect = [0, 0, 0]
            for n, text in batch:
                if (sid, n, text) in contents:
                    expect[2] += 1
                else:
                    expect[0 if (sid, n) not in messages else 1] += 1
                contents.add((sid, n, text))
                messages.add((sid, n))
            got = await writer.append_messages(sid, [message(n, text=t) for n, t in batch], "sync")
            assert [got.new, got.changed, got.unchanged] == expect
            assert len(got.seqs) == expect[0] + expect[1]
        elif op[0] == "event":
            await writer.append_event("tick")
        elif op[0] == "tear":
            if any((root / "manifest").iterdir()):
                await reopen(tear=op[1])
        else:
            await reopen(lose_state=op[0] == "lose_state")
    await writer.close()
    state.close()

    report = verify_archive(root)
    assert report.ok, report.problems
    lines = read_lines(root)
    keys = [
        (line["session_id"], line["message_id"], line["record"]["message"])
        for line in lines
        if line["kind"] == "message"
    ]
    assert len(keys) == len(set(keys)) == len(contents)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_any_history_keeps_the_archive_valid(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(play(Path(tmp) / "archive", ops))
