"""`verify` checks `prev` across segment boundaries too (issue 17, survivor 1).

The other damage tests change segments in ways the `seq` check already catches. Here the
last line of a closed segment is rewritten consistently within itself (text changed, digest
recomputed, seq and prev kept, canonical bytes): only the next segment's first line, whose
`prev` no longer matches, can show it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from archiver.store.layout import prepare_root
from archiver.store.manifest import canonical, record_digest
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message


def segments(root: Path) -> list[Path]:
    return sorted((root / "manifest").glob("*.jsonl"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Messages only, over several small segments: every segment ends with a message line."""
    root = tmp_path_factory.mktemp("segments") / "archive"

    async def build() -> None:
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state, segment_max_bytes=1200)
        for n in range(12):
            await writer.append_messages("s", [message(n)], "sync")
        await writer.close()
        state.close()

    asyncio.run(build())
    assert len(segments(root)) >= 4
    return root


@pytest.fixture
def archive(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(pristine, root)
    return root


def test_the_pristine_archive_verifies(archive: Path) -> None:
    report = verify_archive(archive)
    assert report.ok, report.problems
    assert report.segments == len(segments(archive))


@pytest.mark.parametrize("closed", [0, 1, 2])
def test_a_rewritten_tail_of_a_closed_segment_breaks_the_chain_at_the_next_segment(
    archive: Path, closed: int
) -> None:
    path = segments(archive)[closed]
    lines = path.read_bytes().splitlines()
    obj = json.loads(lines[-1])
    assert obj["kind"] == "message"
    obj["record"]["message"] = "forged"
    obj["digest"] = record_digest(obj["record"])
    lines[-1] = canonical(obj)
    path.write_bytes(b"".join(line + b"\n" for line in lines))

    report = verify_archive(archive)

    assert not report.ok
    following = segments(archive)[closed + 1].name
    found = [(p.kind, p.where, p.seq) for p in report.problems]
    # The line itself is well formed; the break is where the next line's prev points at it.
    assert found == [("chain_broken", f"{following}:1", obj["seq"] + 1)], found
    assert "prev" in report.problems[0].detail
