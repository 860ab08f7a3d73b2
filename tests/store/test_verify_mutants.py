"""`verify`, the tests mutmut's survivors asked for (issue 17).

First, `prev` across segment boundaries: the last line of a closed segment rewritten
consistently within itself (text changed, digest recomputed, seq and prev kept, canonical
bytes), which only the next segment's first line, whose `prev` no longer matches, can show.
Then each problem's place (segment, line, seq), a state_rebuilt's old head looked up again
after the stream, the wait for an unfinished last line (with a fake clock), blobs, pending
attachments, --expect-head, warnings and the human report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archiver.store import verify
from archiver.store.layout import blob_relpath, prepare_root
from archiver.store.manifest import canonical, line_hash, record_digest, strip_jwt
from archiver.store.state import State
from archiver.store.verify import Problem, VerifyReport, render_report, verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message, mms


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


# --- a state_rebuilt's old head, looked up again after the stream (survivors in hash_at) ------


def last_line(root: Path) -> bytes:
    return segments(root)[-1].read_bytes().splitlines()[-1]


def append_line(root: Path, entry: dict[str, Any], seq: int | None = None) -> bytes:
    """Append `entry` as the next line of the last segment, chained to the line before it
    (unless `entry` has its own `prev`), as line `seq` (default: the one after the last
    line's); the line's bytes without the newline."""
    body = last_line(root)
    obj = {
        "seq": seq if seq is not None else json.loads(body)["seq"] + 1,
        "prev": line_hash(body),
        "at": "2024-03-01T10:00:00.000000Z",
        **entry,
    }
    raw = canonical(obj)
    with segments(root)[-1].open("ab") as out:
        out.write(raw + b"\n")
    return raw


def forged(n: int, **extra: Any) -> dict[str, Any]:
    record = message(n)
    entry = {"kind": "message", "session_id": "s", "message_id": f"msg-{n}", "record": record}
    return {**entry, "digest": record_digest(record), "source": "sync", **extra}


def rebuilt(old_seq: int, old_head: str, new_seq: int) -> dict[str, Any]:
    return {
        "kind": "event",
        "event": "state_rebuilt",
        "old_seq": old_seq,
        "old_head": old_head,
        "new_seq": new_seq,
        "new_head": "cd" * 32,
    }


def line_at(root: Path, seq: int) -> bytes:
    for path in segments(root):
        for raw in path.read_bytes().splitlines():
            if json.loads(raw)["seq"] == seq:
                return raw
    raise AssertionError(seq)


def first_seqs(root: Path) -> list[int]:
    return [json.loads(path.read_bytes().splitlines()[0])["seq"] for path in segments(root)]


@pytest.mark.parametrize("which", ["first", "second", "last"])
def test_an_old_head_at_the_first_line_of_a_segment_is_found(archive: Path, which: str) -> None:
    starts = first_seqs(archive)
    old_seq = {"first": starts[0], "second": starts[1], "last": starts[-1]}[which]
    end = json.loads(last_line(archive))["seq"]
    append_line(archive, rebuilt(old_seq, line_hash(line_at(archive, old_seq)), end))
    report = verify_archive(archive)
    assert report.ok, report.problems


def test_an_old_head_at_the_last_line_of_the_manifest_is_found(archive: Path) -> None:
    """The claim names the very last line (which, to be claimed by an earlier line, cannot
    chain to it): the break is the one problem, the old head is in the manifest."""
    end = json.loads(last_line(archive))["seq"]
    last = forged(99, seq=end + 2, prev="ef" * 32, at="2024-03-01T10:00:00.000000Z")
    append_line(archive, rebuilt(end + 2, line_hash(canonical(last)), end + 2))
    append_line(archive, last)

    report = verify_archive(archive)

    where = f"{segments(archive)[-1].name}:{len(segments(archive)[-1].read_bytes().splitlines())}"
    found = [(p.kind, p.where, p.seq) for p in report.problems]
    assert found == [("chain_broken", where, end + 2)], found
    assert (report.last_seq, report.head) == (end + 2, line_hash(canonical(last)))


@pytest.mark.parametrize("old_seq", [0, -3])
def test_an_old_head_before_the_first_line_is_lines_lost_not_a_crash(
    archive: Path, old_seq: int
) -> None:
    end = json.loads(last_line(archive))["seq"]
    append_line(archive, rebuilt(old_seq, "ab" * 32, end))
    report = verify_archive(archive)
    found = [(p.kind, p.seq) for p in report.problems]
    assert found == [("lines_lost", end + 1)], found
    assert "the line there hashes to -..." in report.problems[0].detail


@pytest.mark.parametrize(("tail", "kind"), [(b" ", "not_canonical"), (b"X", "invalid_json")])
def test_an_old_head_is_the_hash_of_the_line_as_it_is(
    archive: Path, tail: bytes, kind: str
) -> None:
    """A line with stray bytes before its newline: its hash (the next line's prev) covers
    them, so the lookup after the stream must too, or a true old head reads as lost."""
    last = segments(archive)[-1]
    kept = last.read_bytes().splitlines()
    kept[-1] += tail
    last.write_bytes(b"".join(raw + b"\n" for raw in kept))
    seq = json.loads(kept[-2])["seq"] + 1
    append_line(archive, rebuilt(seq, line_hash(kept[-1]), seq), seq=seq + 1)

    report = verify_archive(archive)

    found = [(p.kind, p.where, p.seq) for p in report.problems]
    assert found == [(kind, f"{last.name}:{len(kept)}", seq)], found


# --- an unfinished last line, with a fake clock (survivors in _finished_line) ----------------


class FakeTime:
    """verify's `time`: monotonic() moves only in sleep(), by `step` or by what is slept."""

    def __init__(self, step: float | None = None, on_sleep: Callable[[float], None] | None = None):
        self.now, self.step, self.on_sleep = 0.0, step, on_sleep
        self.slept_at: list[float] = []  # the clock when each sleep began
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept_at.append(self.now)
        self.sleeps.append(seconds)
        self.now += self.step if self.step is not None else seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)


def cut_last_line(root: Path, keep: int) -> tuple[Path, bytes]:
    """The last segment with its last line cut to `keep` bytes (no newline); the whole data."""
    last = segments(root)[-1]
    data = last.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    last.write_bytes(data[: start + keep])
    return last, data


def test_a_line_finished_while_waiting_is_taken_at_the_next_read(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last, data = cut_last_line(archive, 30)

    def writer(now: float) -> None:
        if now >= 0.1:
            last.write_bytes(data)

    clock = FakeTime(on_sleep=writer)
    monkeypatch.setattr(verify, "time", clock)
    report = verify_archive(archive)
    assert report.ok, report.problems
    assert report.head == line_hash(data.splitlines()[-1])
    # read again every 0.05 s, and done at the first read that finds the newline
    assert clock.sleeps == [0.05, 0.05]
    assert clock.now == pytest.approx(0.1)


def test_a_line_still_unfinished_at_the_deadline_is_reported_as_last_read(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last, data = cut_last_line(archive, 30)
    lineno = len(data.splitlines())
    grown = data.splitlines()[-1][:50]

    def writer(now: float) -> None:
        if now == 0.5:  # more of it arrives, then nothing: a torn write
            last.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1] + grown)

    clock = FakeTime(step=0.5, on_sleep=writer)
    monkeypatch.setattr(verify, "time", clock)
    report = verify_archive(archive)
    # no read begun once TAIL_WAIT has passed
    assert clock.slept_at == [0.0, 0.5, 1.0, 1.5]
    assert verify.TAIL_WAIT == 2.0
    assert report.head == line_hash(grown)
    found = [(p.kind, p.where) for p in report.problems]
    where = f"{last.name}:{lineno}"
    assert found == [("unterminated_line", where), ("invalid_json", where)], found


# --- warnings (survivors in _Verifier.warning) and the origins line ---------------------------


def test_warnings_are_named_and_capped(archive: Path) -> None:
    for n in range(verify.MAX_PROBLEMS + 2):
        (archive / "manifest" / f"stray-{n:05d}.txt").write_bytes(b"")
    report = verify_archive(archive)
    assert report.ok, report.problems
    assert len(report.warnings) == verify.MAX_PROBLEMS
    assert report.warnings[0] == Problem(
        "unexpected_file", "manifest/stray-00000.txt", "not a segment"
    )


def test_the_checkpoint_origins_are_listed_under_the_counts() -> None:
    report = VerifyReport(root="r", checkpoints_seen=2, origins=["zoom-sms a", "zoom-sms b"])
    assert render_report(report).splitlines()[6:8] == [
        "  checkpoints seen 2, NOT checked "
        "(give --trust PUB: without it a consistent rewrite of the whole chain passes)",
        "  checkpoint origins zoom-sms a, zoom-sms b",
    ]


# --- every problem names its line: segment, line number and seq (place of each problem) -------


def places(root: Path) -> dict[int, tuple[str, int]]:
    """seq -> (segment name, line number) of every line as the writer wrote it."""
    out = {}
    for path in segments(root):
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            out[json.loads(raw)["seq"]] = (path.name, n)
    return out


def rewrite_last_line(root: Path, change: Callable[[dict[str, Any]], None]) -> int:
    """Rewrite the archive's last line through `change` (canonical again); its seq."""
    last = segments(root)[-1]
    kept = last.read_bytes().splitlines()
    obj = json.loads(kept[-1])
    seq = obj["seq"]
    change(obj)
    kept[-1] = canonical(obj)
    last.write_bytes(b"".join(raw + b"\n" for raw in kept))
    return seq


def test_a_gap_is_one_problem_at_the_line_after_it(archive: Path) -> None:
    first, second = segments(archive)[:2]
    kept = first.read_bytes().splitlines()
    first.write_bytes(kept[0] + b"\n")  # its second line, seq 2, deleted
    report = verify_archive(archive)
    found = [(p.kind, p.where, p.segment, p.line, p.seq) for p in report.problems]
    # the place of the line where seq 2 was expected; the chain goes on from seq 3
    assert found == [("chain_broken", f"{second.name}:1", second.name, 1, 2)], found
    assert report.problems[0].detail.startswith("seq 3 where 2 was expected")


@pytest.mark.parametrize(
    ("seq", "followed"), [(True, False), ("7", False), (None, False), (40, True), (0, True)]
)
def test_a_wrong_seq_on_the_last_line(archive: Path, seq: object, followed: bool) -> None:
    """An integer seq is followed (the chain goes on from it, and the line's other problems
    are at that seq); a bool or another type is not."""
    where = places(archive)

    def change(obj: dict[str, Any]) -> None:
        obj["seq"] = seq
        obj["record"]["message"] = "forged"

    expected = rewrite_last_line(archive, change)
    report = verify_archive(archive)
    now = seq if followed else expected
    name, lineno = where[expected]
    found = [(p.kind, p.where, p.segment, p.line, p.seq) for p in report.problems]
    assert found[0] == ("chain_broken", f"{name}:{lineno}", name, lineno, expected), found
    assert ("bad_entry", f"{name}:{lineno}", name, lineno, now) in found[1:], found
    assert all((p.segment, p.line, p.seq) == (name, lineno, now) for p in report.problems[1:])
    assert report.last_seq == now and type(report.last_seq) is int


def test_a_line_problem_names_its_place(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "TAIL_WAIT", 0.0)  # a cut last line is final here
    where = places(archive)

    def change(obj: dict[str, Any]) -> None:
        obj["record"]["message"] = "forged"

    seq = rewrite_last_line(archive, change)
    name, lineno = where[seq]
    report = verify_archive(archive)
    assert [(p.kind, p.where, p.segment, p.line, p.seq) for p in report.problems] == [
        ("bad_entry", f"{name}:{lineno}", name, lineno, seq)
    ]
    # not canonical, then cut: every problem of the line at its place
    last = segments(archive)[-1]
    data = last.read_bytes()
    last.write_bytes(data[:-1] + b" \n")
    report = verify_archive(archive)
    assert [(p.kind, p.where, p.segment, p.line, p.seq) for p in report.problems] == [
        ("not_canonical", f"{name}:{lineno}", name, lineno, seq),
        ("bad_entry", f"{name}:{lineno}", name, lineno, seq),
    ]
    last.write_bytes(data[:-20])
    report = verify_archive(archive)
    got = [(p.kind, p.where, p.segment, p.line, p.seq, p.detail) for p in report.problems]
    assert got[0] == (
        "unterminated_line",
        f"{name}:{lineno}",
        name,
        lineno,
        seq,
        "no newline at the end (a torn write?)",
    )
    assert got[1][:5] == ("invalid_json", f"{name}:{lineno}", name, lineno, seq)
    assert got[1][5].startswith("not a JSON object (")
    assert len(got) == 2


# --- blobs: each problem, named by the blob or the line, with the line's place ----------------

BLOB_A, BLOB_B = b"attachment A", b"attachment B, longer"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def pristine_blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MMS with three attachments: a0 and a2 the same content (one blob), a1 another; and
    one with b0, not downloaded yet (pending in the state's ledger)."""
    root = tmp_path_factory.mktemp("blobs") / "archive"

    async def build() -> None:
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state)
        await writer.append_event("start")
        await writer.append_messages("s", [mms(10, ["a0", "a1", "a2"])], "sync")
        await writer.append_messages("s", [mms(11, ["b0"])], "sync")  # b0: still to download
        for aid, data in (("a0", BLOB_A), ("a1", BLOB_B), ("a2", BLOB_A)):
            path = root / blob_relpath(sha(data))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            entry = {
                "kind": "attachment",
                "session_id": "s",
                "message_id": "msg-10",
                "attachment_id": aid,
                "name": f"{aid}.png",
                "type": "PNG",
                "size": len(data),
                "sha256": sha(data),
                "blob": blob_relpath(sha(data)),
            }
            await writer.append_entries([entry])
        await writer.close()
        state.close()

    asyncio.run(build())
    return root


@pytest.fixture
def blobs(pristine_blobs: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(pristine_blobs, root, symlinks=True)
    return root


def attachment_place(root: Path, aid: str) -> tuple[str, str, int, int]:
    """(where, segment, line, seq) of the attachment line of `aid`."""
    for path in segments(root):
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            obj = json.loads(raw)
            if obj.get("kind") == "attachment" and obj["attachment_id"] == aid:
                return f"{path.name}:{n}", path.name, n, obj["seq"]
    raise AssertionError(aid)


def test_the_pristine_blobs_verify_each_blob_once(blobs: Path) -> None:
    report = verify_archive(blobs)
    assert report.ok, report.problems
    assert (report.attachments, report.blobs_checked) == (3, 2)
    assert report.attachments_pending == 1
    assert report.pending == [Problem("attachment_pending", B0, "attachment 'b0'", seq=3)]


B0 = "message 'msg-11' of session 's' (seq 3)"


REL_A, REL_B = blob_relpath(sha(BLOB_A)), blob_relpath(sha(BLOB_B))


def missing_a(root: Path) -> None:
    (root / REL_A).unlink()


def folder_for_a(root: Path) -> None:
    (root / REL_A).unlink()
    (root / REL_A).mkdir()


def link_b_outside(root: Path) -> None:
    outside = root.parent / "outside"
    outside.write_bytes(BLOB_B)
    (root / REL_B).unlink()
    (root / REL_B).symlink_to(outside)


def flip_a(root: Path) -> None:
    (root / REL_A).write_bytes(b"X" + BLOB_A[1:])


def cut_b(root: Path) -> None:
    (root / REL_B).write_bytes(BLOB_B[:-1])


NOT_FILE = "not a regular file inside the archive root"
FLIPPED = sha(b"X" + BLOB_A[1:])


@pytest.mark.parametrize(
    ("damage", "aid", "expected"),
    [
        (missing_a, "a0", [("blob_missing", None, f"{REL_A} does not exist")]),
        (folder_for_a, "a0", [("blob_not_file", REL_A, NOT_FILE)]),
        (link_b_outside, "a1", [("blob_not_file", REL_B, NOT_FILE)]),
        (flip_a, "a0", [("blob_hash_mismatch", REL_A, f"content hashes to {FLIPPED} ({{where}})")]),
        (
            cut_b,
            "a1",
            [
                ("blob_size", REL_B, f"{len(BLOB_B) - 1} bytes, line {{where}} says {len(BLOB_B)}"),
                ("blob_hash_mismatch", REL_B, f"content hashes to {sha(BLOB_B[:-1])} ({{where}})"),
            ],
        ),
    ],
)  # fmt: skip
def test_a_blob_problem_names_the_blob_and_the_first_line_that_needs_it(
    blobs: Path,
    damage: Callable[[Path], None],
    aid: str,
    expected: list[tuple[str, str | None, str]],
) -> None:
    """a2 needs the same blob as a0: one problem, at a0's line."""
    where, name, lineno, seq = attachment_place(blobs, aid)
    damage(blobs)
    report = verify_archive(blobs)
    want = [
        Problem(kind, rel or where, detail.format(where=where), name, lineno, seq)
        for kind, rel, detail in expected
    ]
    assert report.problems == want


def test_a_line_naming_the_wrong_blob_path(blobs: Path) -> None:
    where, name, lineno, seq = attachment_place(blobs, "a2")

    def change(obj: dict[str, Any]) -> None:
        obj["blob"] = REL_B

    assert rewrite_last_line(blobs, change) == seq
    report = verify_archive(blobs)
    assert report.problems == [
        Problem("blob_path", where, f"blob {REL_B!r} should be {REL_A}", name, lineno, seq)
    ]


def test_every_blob_is_rehashed_at_sample_100(blobs: Path) -> None:
    flip_a(blobs)
    for seed in range(100):
        report = verify_archive(blobs, rng_seed=seed)
        assert report.blobs_checked == 2
        assert [p.kind for p in report.problems] == ["blob_hash_mismatch"]


@pytest.mark.parametrize("size", [True, None, "1", 1.0])
def test_a_size_that_is_no_integer_is_a_blob_size_problem(blobs: Path, size: object) -> None:
    """A one-byte blob whose line says size True (== 1 in Python): still no size."""
    where, name, lineno, seq = attachment_place(blobs, "a2")
    rel = blob_relpath(sha(b"n"))

    def change(obj: dict[str, Any]) -> None:
        obj.update(sha256=sha(b"n"), blob=rel, size=size)

    assert rewrite_last_line(blobs, change) == seq
    (blobs / rel).parent.mkdir(parents=True, exist_ok=True)
    (blobs / rel).write_bytes(b"n")
    report = verify_archive(blobs)
    assert report.problems == [
        Problem("blob_size", rel, f"1 bytes, line {where} says {size}", name, lineno, seq)
    ]


# --- attachments listed without a line: pending or missing (survivors in unsettled) ----------


def test_a_pending_attachment_is_a_problem_only_with_complete(blobs: Path) -> None:
    report = verify_archive(blobs, complete=True)
    assert report.problems == [
        Problem("attachment_pending", B0, "attachment 'b0' has no line yet (pending)")
    ]
    assert (report.attachments_pending, report.pending) == (1, [])


MISSING_A2 = Problem(
    "attachment_missing",
    "message 'msg-10' of session 's' (seq 2)",
    "attachment 'a2' has no attachment or attachment_failed line, and the state has no "
    "download pending for it",
)


def test_an_attachment_line_removed_is_missing_not_pending(blobs: Path) -> None:
    last = segments(blobs)[-1]
    last.write_bytes(b"".join(raw + b"\n" for raw in last.read_bytes().splitlines()[:-1]))
    report = verify_archive(blobs)
    assert report.problems == [MISSING_A2]
    assert report.attachments_pending == 1  # b0, as before


def test_without_a_state_nothing_is_known_to_be_pending(blobs: Path) -> None:
    (blobs / "state.sqlite3").unlink()
    report = verify_archive(blobs)
    assert [p.kind for p in report.problems] == ["attachment_missing"]
    assert report.problems[0].where == B0
    assert (report.attachments_pending, report.pending) == (0, [])


def test_a_message_the_state_has_not_replayed_yet_is_pending(blobs: Path) -> None:
    raw = append_line(blobs, forged_mms(12, ["c0"]))
    seq = json.loads(raw)["seq"]
    report = verify_archive(blobs)
    assert report.ok, report.problems
    assert report.attachments_pending == 2
    assert report.pending[1] == Problem(
        "attachment_pending", f"message 'msg-12' of session 's' (seq {seq})", "attachment 'c0'",
        seq=seq,
    )  # fmt: skip


def forged_mms(n: int, aids: list[str]) -> dict[str, Any]:
    record = strip_jwt(mms(n, aids))
    entry = {"kind": "message", "session_id": "s", "message_id": f"msg-{n}", "record": record}
    return {**entry, "digest": record_digest(record), "source": "sync"}


# --- a head obtained elsewhere (--expect-head; survivors in head_claims, heads_not_found) -----


def test_an_expected_head_found_is_no_checkpoint(archive: Path) -> None:
    end = json.loads(last_line(archive))["seq"]
    report = verify_archive(archive, expect_head=(end - 3, line_hash(line_at(archive, end - 3))))
    assert report.ok, report.problems
    assert report.checkpoints_checked == 0


def test_an_expected_head_that_differs_is_named_at_its_line(archive: Path) -> None:
    end = json.loads(last_line(archive))["seq"]
    actual = line_hash(line_at(archive, end - 3))
    name, lineno = places(archive)[end - 3]
    report = verify_archive(archive, expect_head=(end - 3, "ab" * 32))
    assert report.problems == [
        Problem(
            "head_mismatch",
            "--expect-head",
            f"says seq {end - 3} hashes to {'ab' * 8}..., the manifest's line there hashes to "
            f"{actual[:16]}... (the chain was rewritten or lines replaced)",
            name, lineno, end - 3,
        )
    ]  # fmt: skip


def test_an_expected_head_beyond_the_end_is_head_missing(archive: Path) -> None:
    end = json.loads(last_line(archive))["seq"]
    report = verify_archive(archive, expect_head=(end + 1, "ab" * 32))
    assert report.problems == [
        Problem(
            "head_missing",
            "--expect-head",
            f"says seq {end + 1} hashes to {'ab' * 8}..., but the manifest ends at seq {end}: "
            "lines were removed from its end",
        )
    ]
