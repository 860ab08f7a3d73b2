"""Streaming the manifest with its hash chain checked, and reading a line back by position.

The export reads the archive format directly (DESIGN.md, "Archive format"), as an auditor would:
segments `manifest/NNNNNN.jsonl` in order, one canonical JSON object per line, `seq` counting up
from 1 with no gap, `prev` the SHA-256 of the previous line's bytes. A break anywhere stops the
export (ManifestCorruptError naming the segment and line): a production drawn from a chain that
does not hold could not be shown to match the archive.

A daemon may be appending while we read. Closed segments never change and the open one only
grows, so a line's (segment, offset) stays valid; an unfinished last line (no newline yet) is
left out, and the export covers the archive up to the last complete line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from archiver.errors import ManifestCorruptError

ZERO_HASH: Final = "0" * 64
_SEGMENT = re.compile(r"\d{6,}\.jsonl")
_OPEN_FILES: Final = 16


class ChainBroken(ManifestCorruptError):
    """The manifest does not chain: `segment` (file name), `line` (1-based) and `problem`."""

    def __init__(self, segment: str, line: int, problem: str) -> None:
        self.segment = segment
        self.line = line
        self.problem = problem
        super().__init__(f"manifest chain broken at {segment} line {line}: {problem}")


@dataclass(frozen=True, slots=True)
class Line:
    """One complete manifest line: where it is, its bytes (no newline) and its parsed object."""

    seq: int
    segment: int
    offset: int
    raw: bytes
    sha: bytes  # SHA-256 of raw: what the next line's `prev` holds, in binary
    obj: dict[str, Any]


def segment_file(root: Path, number: int) -> Path:
    return root / "manifest" / f"{number:06d}.jsonl"


def list_segments(root: Path) -> list[int]:
    """The segment numbers present, in order; a gap in them is a break of the chain."""
    numbers = []
    with os.scandir(root / "manifest") as entries:
        for entry in entries:
            # Only canonical names count; other files (an operator's notes) are not the manifest.
            if _SEGMENT.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                number = int(entry.name.removesuffix(".jsonl"))
                if entry.name == segment_file(root, number).name and number >= 1:
                    numbers.append(number)
    numbers.sort()
    for expected, number in enumerate(numbers, start=1):
        if number != expected:
            raise ChainBroken(segment_file(root, expected).name, 0, "segment file is missing")
    return numbers


class ManifestScan:
    """Iterate every complete line in order, checking the chain; then `last_seq` and `head`
    describe the archive as exported (the chain head is the hash of the last line)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.last_seq = 0
        self.head = ZERO_HASH
        self.segments = 0
        self.unfinished_tail = False

    def __iter__(self) -> Iterator[Line]:
        numbers = list_segments(self.root)
        self.segments = len(numbers)
        for number in numbers:
            yield from self._segment(number, last=number == numbers[-1])

    def _segment(self, number: int, *, last: bool) -> Iterator[Line]:
        path = segment_file(self.root, number)
        offset = 0
        with path.open("rb") as handle:
            for lineno, chunk in enumerate(handle, start=1):
                if not chunk.endswith(b"\n"):
                    if last:
                        self.unfinished_tail = True  # being appended right now, or torn
                        return
                    raise ChainBroken(path.name, lineno, "line has no newline (torn)")
                raw = chunk[:-1]
                yield self._check(raw, path.name, lineno, number, offset)
                offset += len(chunk)

    def _check(self, raw: bytes, segment: str, lineno: int, number: int, offset: int) -> Line:
        try:
            obj = json.loads(raw)
        except ValueError as exc:  # also UnicodeDecodeError
            raise ChainBroken(segment, lineno, f"not a JSON line ({exc})") from exc
        if not isinstance(obj, dict):
            raise ChainBroken(segment, lineno, "not a JSON object")
        seq = obj.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq != self.last_seq + 1:
            raise ChainBroken(segment, lineno, f"seq {seq!r} where {self.last_seq + 1} expected")
        if obj.get("prev") != self.head:
            raise ChainBroken(segment, lineno, f"prev does not match line seq {self.last_seq}")
        digest = hashlib.sha256(raw).digest()
        self.last_seq = seq
        self.head = digest.hex()
        return Line(seq, number, offset, raw, digest, obj)


class LineReader:
    """Reads a line back from its recorded position and proves it is the line that was checked.

    The second read could meet a file replaced between the passes; comparing its SHA-256 with
    the one recorded while the chain was verified keeps the export tied to the verified chain.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: OrderedDict[int, BinaryIO] = OrderedDict()

    def read(self, segment: int, offset: int, length: int, sha256: bytes) -> bytes:
        handle = self._handle(segment)
        handle.seek(offset)
        raw = handle.read(length)
        if hashlib.sha256(raw).digest() != sha256:
            name = segment_file(self.root, segment).name
            raise ManifestCorruptError(f"{name} changed while it was being exported")
        return raw

    def _handle(self, segment: int) -> BinaryIO:
        handle = self._files.get(segment)
        if handle is None:
            handle = segment_file(self.root, segment).open("rb")
            self._files[segment] = handle
            if len(self._files) > _OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(segment)
        return handle

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
