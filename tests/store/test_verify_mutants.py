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
from archiver.store.verify import Problem, VerifyReport, render_report, verify_archive
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


# --- the human report (mutmut survivors in render_report and _checkpoint_summary) ------------


def test_the_human_report_names_every_section_and_count() -> None:
    report = VerifyReport(
        root="ROOT",
        segments=2,
        lines=9,
        last_seq=9,
        head="ab" * 32,
        messages=5,
        attachments=2,
        attachments_failed=1,
        events=1,
        blobs_checked=1,
        sample_pct=50.0,
        attachments_pending=1,
        problems=[Problem("chain_broken", "000002.jsonl:1", "prev differs")],
        problems_omitted=3,
        warnings=[Problem("orphan_blob", "blobs/sha256/cd/x", "no line")],
        pending=[Problem("attachment_pending", "message 'm'", "attachment 'a'")],
    )
    assert render_report(report).splitlines() == [
        "archive ROOT: PROBLEMS FOUND",
        "  segments 2, lines 9, last seq 9",
        f"  head {'ab' * 32}",
        "  messages 5, attachments 2, failed attachments 1, events 1",
        "  blobs re-hashed 1 (sample 50%), every blob's size checked",
        "  attachments pending download 1",
        "  checkpoints none (the head is not anchored outside the manifest)",
        "problems (1):",
        "  000002.jsonl:1  chain_broken: prev differs",
        "warnings (1):",
        "  blobs/sha256/cd/x  orphan_blob: no line",
        "pending (a problem only with --complete) (1):",
        "  message 'm'  attachment_pending: attachment 'a'",
        "  ... and 3 more problems",
    ]


CHECKED = "  checkpoints seen 3, verified against trusted keys {checked}"
NOT_CHECKED = (
    "  checkpoints seen 3, NOT checked "
    "(give --trust PUB: without it a consistent rewrite of the whole chain passes)"
)


@pytest.mark.parametrize(
    ("checked", "kinds", "line"),
    [
        (2, [], CHECKED.format(checked=2)),
        (0, [], NOT_CHECKED),
        (0, ["bad_entry"], NOT_CHECKED),
        # a trusted key was given but nothing matched: say what was checked, not "give --trust"
        (0, ["checkpoint_signature"], CHECKED.format(checked=0)),
        (0, ["head_mismatch"], CHECKED.format(checked=0)),
        (1, ["head_missing"], CHECKED.format(checked=1)),
    ],
)
def test_the_checkpoint_line_says_whether_checkpoints_were_checked(
    checked: int, kinds: list[str], line: str
) -> None:
    report = VerifyReport(
        root="r",
        checkpoints_seen=3,
        checkpoints_checked=checked,
        problems=[Problem(kind, "w", "d") for kind in kinds],
    )
    assert render_report(report).splitlines()[6] == line
