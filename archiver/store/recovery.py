"""Start-up scan of the manifest: find the chain head, repair a torn tail, catch the index up.

A crash mid-append can only damage the end of the last segment: the writer fsyncs a segment
before it creates the next, and never rewrites a byte once written. So the repair is narrow: an
unterminated tail, plus at most one complete last line that does not parse or chain, are cut
off (and fsynced). Anything else (a gap, a broken link, a bad line followed by good ones) is
corruption and raises ManifestCorruptError naming the segment and line: history is never
"repaired".

The same pass replays every line the state database has not seen into the index, so that one
read of the last segment serves both jobs in the usual case, and a lost state file costs one
streaming pass over the manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from archiver.errors import ManifestCorruptError, StorageError
from archiver.store.index import ManifestIndex
from archiver.store.layout import list_segments, missing_segments
from archiver.store.manifest import (
    ZERO_HASH,
    entry_problems,
    line_hash,
    link_problem,
    parse_line,
    segment_name,
)

# Lines per index transaction during replay: memory stays flat over millions of lines.
_REPLAY_CHUNK: Final = 2000


@dataclass(frozen=True)
class Tail:
    """Where appends continue, and what the start-up repair did."""

    segment: int  # number of the segment to append to (it may not exist yet)
    size: int  # its length in bytes
    seq: int  # last seq in the manifest (0: empty)
    head: str  # hash of that line (ZERO_HASH: empty)
    bytes_removed: int  # cut from a torn tail; 0 when the tail was whole
    replayed: int = 0  # lines applied to the index
    index_reset: bool = False  # the state described another manifest and was cleared


def _corrupt(segment: int, line: int, detail: str) -> ManifestCorruptError:
    where = f"manifest/{segment_name(segment)}" + (f":{line}" if line else "")
    return ManifestCorruptError(
        f"{where}: {detail}; the manifest is not what was written and is left untouched "
        "(run `verify` for the full report)"
    )


def recover(directory: Path, index: ManifestIndex) -> Tail:
    """Scan, repair the tail, and bring `index` up to the manifest's last line."""
    segments = list_segments(directory)
    gaps = missing_segments([n for n, _ in segments])
    if gaps:
        raise _corrupt(gaps[0][0], 0, "segment file is missing")
    indexed = index.position()[0]
    tail = _scan(segments, index)
    if tail is None:
        # The state describes a different or longer manifest (restored from a backup, copied
        # from another root): it is a cache, so start it afresh from this manifest.
        index.reset()
        tail = _scan(segments, index)
        assert tail is not None, "an empty index always agrees"
        return replace(tail, replayed=tail.seq, index_reset=True)
    return replace(tail, replayed=tail.seq - indexed)


def _scan(segments: list[tuple[int, Path]], index: ManifestIndex) -> Tail | None:
    """Stream from the segment holding the index position; None if the index disagrees."""
    indexed_seq, indexed_head = index.position()
    if not segments:
        return Tail(1, 0, 0, ZERO_HASH, 0) if indexed_seq == 0 else None
    start = _replay_start(segments, indexed_seq)
    seq, head = _link_before(segments, start)
    pending: list[dict[str, Any]] = []
    last = segments[-1][0]
    size, cut = 0, None
    for n, path in segments[start - 1 :]:
        size, cut = 0, None  # cut: offset where a torn tail starts, if any
        bad: tuple[int, str] | None = None  # (line, problem) of a line that does not fit
        with path.open("rb") as stream:
            for lineno, raw in enumerate(stream, 1):
                if bad is not None and raw.endswith(b"\n"):
                    raise _corrupt(n, *bad)  # a whole line follows it: not a torn tail
                obj, problem = _check(raw, seq, head, n, lineno)
                if problem is not None:
                    if n != last:
                        raise _corrupt(n, lineno, problem)
                    bad, cut = (lineno, problem), size if cut is None else cut
                    size += len(raw)
                    continue
                seq, head = seq + 1, line_hash(raw[:-1])
                if seq == indexed_seq and head != indexed_head:
                    return None
                if seq > indexed_seq:
                    pending.append(obj)
                    if len(pending) >= _REPLAY_CHUNK:
                        index.apply(pending, seq, head)
                        pending = []
                size += len(raw)
    if indexed_seq > seq:
        return None
    if pending:
        index.apply(pending, seq, head)
    if cut is None:
        return Tail(last, size, seq, head, 0)
    return Tail(last, cut, seq, head, _truncate(segments[-1][1], cut))


def _check(
    raw: bytes, seq: int, head: str, segment: int, lineno: int
) -> tuple[dict[str, Any], str | None]:
    """Parse a raw line (with newline) and say why it cannot follow (seq, head), if it cannot:
    what a crash can leave. A line that chains but lacks its kind's keys was written whole,
    so no crash made it (a newer archiver's kind?): that is corruption, never cut."""
    if not raw.endswith(b"\n"):
        return {}, "unterminated line"
    try:
        obj = parse_line(raw[:-1])
    except ValueError as exc:
        return {}, f"not a JSON object ({exc})"
    problem = link_problem(obj, seq + 1, head)
    invalid = entry_problems(obj) if problem is None else []
    if invalid:
        raise _corrupt(segment, lineno, "; ".join(invalid))
    return obj, problem


def _truncate(path: Path, length: int) -> int:
    """Cut `path` to `length` bytes durably; returns how many bytes went."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            removed = os.fstat(fd).st_size - length
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot repair the torn tail of {path.name}: {exc}") from exc
    return removed


def _replay_start(segments: list[tuple[int, Path]], indexed_seq: int) -> int:
    """The last segment whose first line is at or before the index position (1 for none)."""
    if indexed_seq > 0:
        for n, path in reversed(segments):
            first = _first_seq(path)
            if first is not None and first <= indexed_seq:
                return n
    return segments[0][0]


def _first_seq(path: Path) -> int | None:
    with path.open("rb") as stream:
        raw = stream.readline()
    try:
        seq = parse_line(raw[:-1]).get("seq") if raw.endswith(b"\n") else None
    except ValueError:
        return None
    return seq if isinstance(seq, int) else None


def _link_before(segments: list[tuple[int, Path]], start: int) -> tuple[int, str]:
    """(seq, hash) of the last line before segment `start`: what its first line must chain to."""
    if start == segments[0][0]:
        return 0, ZERO_HASH
    n, path = segments[start - 2]
    body = read_last_line(path)
    if body is None:
        raise _corrupt(n, 0, "closed segment is empty or ends in an unterminated line")
    try:
        seq = parse_line(body).get("seq")
    except ValueError as exc:
        raise _corrupt(n, 0, f"last line is not a JSON object ({exc})") from exc
    if not isinstance(seq, int):
        raise _corrupt(n, 0, "last line has no integer seq")
    return seq, line_hash(body)


def read_last_line(path: Path, chunk: int = 65536) -> bytes | None:
    """The last line of `path` without its newline; None if empty or unterminated."""
    with path.open("rb") as stream:
        end = stream.seek(0, os.SEEK_END)
        if end == 0:
            return None
        stream.seek(end - 1)
        if stream.read(1) != b"\n":
            return None
        pos, buf = end - 1, b""
        while True:
            step = min(chunk, pos)
            pos -= step
            stream.seek(pos)
            buf = stream.read(step) + buf
            newline = buf.rfind(b"\n")
            if newline >= 0:
                return buf[newline + 1 :]
            if pos == 0:
                return buf
