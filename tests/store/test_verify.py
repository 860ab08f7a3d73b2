"""`verify`: every kind of damage is found, and named by the line or blob where it is."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from archiver.store.layout import blob_relpath
from archiver.store.state import State
from archiver.store.verify import VerifyReport, render_report, report_to_json, verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message, mms, segment

BLOBS = [b"first attachment", b"second attachment", b"third"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small archive over three segments, with blobs, built once and copied per test."""
    import asyncio

    root = tmp_path_factory.mktemp("pristine") / "archive"

    async def build() -> None:
        from archiver.store.layout import prepare_root

        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state, segment_max_bytes=2500)
        await writer.append_event("start")
        await writer.append_messages("s", [message(n) for n in range(6)], "sync")
        await writer.append_messages("s", [mms(10, ["a0", "a1"]), mms(11, ["a2", "a3"])], "sync")
        for n, data in enumerate(BLOBS):
            path = root / blob_relpath(sha(data))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            await writer.append_entries(
                [
                    {
                        "kind": "attachment",
                        "session_id": "s",
                        "message_id": "msg-10" if n < 2 else "msg-11",
                        "attachment_id": f"a{n}",
                        "name": f"../../evil-{n}",
                        "type": "PNG",
                        "size": len(data),
                        "sha256": sha(data),
                        "blob": blob_relpath(sha(data)),
                    }
                ]
            )
        await writer.append_entries(
            [
                {
                    "kind": "attachment_failed",
                    "session_id": "s",
                    "message_id": "msg-11",
                    "attachment_id": "a3",
                    "name": "x",
                    "type": "PNG",
                    "size": 10**9,
                    "reason": "over max_bytes",
                    "attempts": 1,
                }
            ]
        )
        await writer.append_messages("s", [message(1, text="edited")], "sync")
        await writer.close()
        state.close()

    asyncio.run(build())
    return root


@pytest.fixture
def archive(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(pristine, root, symlinks=True)
    return root


def test_pristine_archive_is_ok(archive: Path) -> None:
    report = verify_archive(archive)
    assert report.ok, report.problems
    assert report.segments >= 3
    assert (report.lines, report.last_seq) == (14, 14)
    assert (report.messages, report.attachments, report.attachments_failed, report.events) == (
        9,
        3,
        1,
        1,
    )
    assert report.blobs_checked == 3
    assert report.warnings == []
    last = sorted((archive / "manifest").iterdir())[-1].read_bytes().splitlines()[-1]
    assert report.head == hashlib.sha256(last).hexdigest()


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def flip_record_byte(root: Path) -> None:
    lines = lines_of(segment(root, 1))
    lines[2] = lines[2].replace(b"hello 1", b"hellO 1")
    write_lines(segment(root, 1), lines)


def delete_line(root: Path) -> None:
    lines = lines_of(segment(root, 1))
    write_lines(segment(root, 1), lines[:1] + lines[2:])


def swap_segments(root: Path) -> None:
    one, two = segment(root, 1).read_bytes(), segment(root, 2).read_bytes()
    segment(root, 1).write_bytes(two)
    segment(root, 2).write_bytes(one)


def rename_segment(root: Path) -> None:
    last = max(int(p.stem) for p in (root / "manifest").iterdir())
    segment(root, 2).rename(segment(root, last + 1))


def flip_blob_byte(root: Path) -> None:
    path = root / blob_relpath(sha(BLOBS[1]))
    path.write_bytes(b"X" + BLOBS[1][1:])


def delete_blob(root: Path) -> None:
    (root / blob_relpath(sha(BLOBS[0]))).unlink()


def truncate_last_line(root: Path) -> None:
    last = max((root / "manifest").iterdir())
    last.write_bytes(last.read_bytes()[:-10])


def respace_last_line(root: Path) -> None:
    last = max((root / "manifest").iterdir())
    lines = lines_of(last)
    lines[-1] = json.dumps(json.loads(lines[-1]), sort_keys=True).encode()
    write_lines(last, lines)


def symlink_blob_outside(root: Path) -> None:
    path = root / blob_relpath(sha(BLOBS[2]))
    outside = root.parent / "outside"
    outside.write_bytes(BLOBS[2])
    path.unlink()
    path.symlink_to(outside)


def find_line(root: Path, needle: bytes) -> str:
    for path in sorted((root / "manifest").iterdir()):
        for n, line in enumerate(lines_of(path), 1):
            if needle in line:
                return f"{path.name}:{n}"
    raise AssertionError(needle)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            flip_record_byte,
            lambda root: [
                ("bad_entry", "000001.jsonl:3", "digest does not match the record"),
                ("chain_broken", "000001.jsonl:4", "prev"),
            ],
        ),
        (
            delete_line,
            lambda root: [("chain_broken", "000001.jsonl:2", "seq 3 where 2 was expected")],
        ),
        (
            swap_segments,
            lambda root: [
                ("chain_broken", "000001.jsonl:1", "where 1 was expected"),
                ("chain_broken", "000002.jsonl:1", "where"),
                ("chain_broken", "000003.jsonl:1", "where"),
            ],
        ),
        (
            rename_segment,
            lambda root: [
                ("segment_missing", "manifest/000002.jsonl", "missing"),
                ("chain_broken", "000003.jsonl:1", "where"),
                ("chain_broken", "000004.jsonl:1", "seq 6 where"),  # 000002, renamed
            ],
        ),
        (
            flip_blob_byte,
            lambda root: [("blob_hash_mismatch", blob_relpath(sha(BLOBS[1])), "hashes to")],
        ),
        (
            delete_blob,
            lambda root: [("blob_missing", find_line(root, sha(BLOBS[0]).encode()), "not exist")],
        ),
        (
            truncate_last_line,
            lambda root: [("unterminated_line", "", "no newline"), ("invalid_json", "", "")],
        ),
        (respace_last_line, lambda root: [("not_canonical", "", "canonical")]),
        (
            symlink_blob_outside,
            lambda root: [("blob_not_file", blob_relpath(sha(BLOBS[2])), "regular file")],
        ),
    ],
)
def test_damage_is_found_where_it_is(
    archive: Path,
    damage: Callable[[Path], None],
    expected: Callable[[Path], list[tuple[str, str, str]]],
) -> None:
    want = expected(archive)
    damage(archive)
    report = verify_archive(archive)
    assert not report.ok
    found = [(p.kind, p.where, p.detail) for p in report.problems]
    for kind, where, detail in want:
        assert any(k == kind and where in w and detail in d for k, w, d in found), (
            f"{kind} at {where!r} not in {found}"
        )
    assert len(found) == len(want), found


def test_orphan_and_stray_files_are_warnings(archive: Path) -> None:
    orphan = sha(b"orphan")
    path = archive / blob_relpath(orphan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"orphan")
    (archive / "blobs" / "sha256" / "stray.tmp").write_bytes(b"")
    (archive / "manifest" / "notes.txt").write_bytes(b"")
    report = verify_archive(archive)
    assert report.ok
    assert {(w.kind, w.where) for w in report.warnings} == {
        ("orphan_blob", blob_relpath(orphan)),
        ("unexpected_file", "blobs/sha256/stray.tmp"),
        ("unexpected_file", "manifest/notes.txt"),
    }


def test_a_line_being_written_is_waited_for_not_reported(archive: Path) -> None:
    # verify on a live archive can read the last line while the daemon is still writing it.
    last = max((archive / "manifest").iterdir())
    data = last.read_bytes()
    cut = len(data) - 40
    last.write_bytes(data[:cut])
    finished = threading.Timer(0.3, lambda: last.write_bytes(data))
    finished.start()
    try:
        report = verify_archive(archive)
    finally:
        finished.join()
    assert report.ok, report.problems
    assert report.last_seq == json.loads(data.splitlines()[-1])["seq"]


def test_sampling(archive: Path) -> None:
    flip_blob_byte(archive)
    assert verify_archive(archive, sample_pct=0).ok
    assert verify_archive(archive, sample_pct=0).blobs_checked == 0
    picked = {verify_archive(archive, sample_pct=50, rng_seed=s).blobs_checked for s in range(20)}
    assert picked <= {0, 1, 2, 3} and len(picked) > 1
    first = verify_archive(archive, sample_pct=50, rng_seed=7)
    assert verify_archive(archive, sample_pct=50, rng_seed=7) == first
    with pytest.raises(ValueError):
        verify_archive(archive, sample_pct=101)


def test_no_manifest(tmp_path: Path) -> None:
    report = verify_archive(tmp_path)
    assert not report.ok
    assert report.problems[0].kind == "manifest_missing"


def test_reports(archive: Path) -> None:
    delete_line(archive)
    report = verify_archive(archive)
    text = render_report(report)
    assert text.startswith(f"archive {archive}: PROBLEMS FOUND")
    assert "000001.jsonl:2  chain_broken" in text
    data = report_to_json(report)
    json.dumps(data)
    assert data["ok"] is False and data["problems"][0]["where"] == "000001.jsonl:2"
    assert render_report(VerifyReport(root="r", ok=True)).startswith("archive r: OK")
