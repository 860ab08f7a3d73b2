"""A manifest whose chain does not hold is never exported: the break is named, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from archiver.errors import ManifestCorruptError
from archiver.export.reader import ChainBroken, LineReader, ManifestScan
from tests.export.archive import Archive
from tests.export.helpers import export


def _rewrite(archive: Archive, seq: int, change: Callable[[dict[str, object]], None]) -> None:
    """Change line `seq` in place (its segment is rewritten with the other lines untouched)."""
    path = archive.segment(seq)
    lines = path.read_bytes().split(b"\n")
    index = (seq - 1) % archive.per_segment
    obj = json.loads(lines[index])
    change(obj)
    lines[index] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(lines))


def _edit_text(obj: dict[str, object]) -> None:
    record = obj["record"]
    assert isinstance(record, dict)
    record["message"] = "forged"


@pytest.fixture
def ten(archive: Archive) -> Archive:
    for n in range(10):
        archive.message("S", f"m{n}", text=f"message {n}")
    return archive  # segments of 4 lines: 000001 (1-4), 000002 (5-8), 000003 (9-10)


@pytest.mark.parametrize(
    ("damage", "segment", "line", "words"),
    [
        # A forged line chains itself, but the next line's prev no longer matches it.
        (lambda a: _rewrite(a, 6, _edit_text), "000002.jsonl", 3, "prev does not match"),
        (lambda a: _rewrite(a, 9, lambda o: o.update(seq=11)), "000003.jsonl", 1, "seq 11"),
        (lambda a: _rewrite(a, 1, lambda o: o.update(prev="1" * 64)), "000001.jsonl", 1, "prev"),
        (lambda a: a.segment(5).unlink(), "000002.jsonl", 0, "missing"),
        (
            lambda a: a.segment(1).write_bytes(a.segment(1).read_bytes()[:-1]),
            "000001.jsonl",
            4,
            "no newline",
        ),
        (
            lambda a: a.segment(5).write_bytes(b"not json\n" + a.segment(5).read_bytes()),
            "000002.jsonl",
            1,
            "not a JSON line",
        ),
    ],
)
def test_break_is_named_and_nothing_is_written(
    ten: Archive,
    tmp_path: Path,
    damage: Callable[[Archive], None],
    segment: str,
    line: int,
    words: str,
) -> None:
    damage(ten)
    out = tmp_path / "out"
    with pytest.raises(ChainBroken) as caught:
        export(ten.root, out)
    assert (caught.value.segment, caught.value.line) == (segment, line)
    assert words in caught.value.problem and segment in str(caught.value)
    assert not out.exists()


def test_a_line_changed_between_the_passes_is_refused(ten: Archive) -> None:
    scan = ManifestScan(ten.root)
    lines = list(scan)
    target = lines[5]
    _rewrite(ten, target.seq, _edit_text)
    with LineReader(ten.root) as reader, pytest.raises(ManifestCorruptError, match="changed"):
        reader.read(target.segment, target.offset, len(target.raw), target.sha)


def test_scan_positions_read_back(ten: Archive) -> None:
    with LineReader(ten.root) as reader:
        for line in ManifestScan(ten.root):
            assert reader.read(line.segment, line.offset, len(line.raw), line.sha) == line.raw
            assert line.raw == ten.lines[line.seq]
