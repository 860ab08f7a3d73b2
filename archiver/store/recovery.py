"""Start-up scan of the manifest: find the chain head, cut a torn write, catch the index up.

One writer appends whole lines and fsyncs them, and fsyncs a segment before it creates the
next. So a crash or a power cut can leave only one kind of damage: a final line it did not
finish, which is either unterminated or (its end turned to zeros by the filesystem) not JSON
at all. That line, and nothing else, is cut; its bytes are moved to
`ROOT/recovered/<time>.tail` first, never deleted. A complete final line that parses, chains
wrongly or lacks its keys was written whole: that is an edit, not a crash.

Everything else stops the start: a line that breaks the chain, a gap in `seq`, a missing
segment, a state cache that has seen more of the manifest than there is (lines removed from the
end, a segment deleted) or another chain. The refusal names the segment, line and seq and says
what to do. `check_startup` runs the same scan read-only before anything is written to ROOT;
`recover` (in the writer's thread) repeats it, cuts and replays.

The same pass replays every line the state has not seen into the index, so one read of the last
segment serves both jobs in the usual case, and a lost state costs one streaming pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from archiver.errors import ManifestCorruptError, StorageError
from archiver.store.index import ManifestIndex
from archiver.store.layout import (
    MANIFEST_DIR,
    RECOVERED_DIR,
    STATE_FILE,
    fsync_dir,
    list_segments,
    missing_segments,
)
from archiver.store.manifest import (
    ZERO_HASH,
    entry_problems,
    line_hash,
    link_problem,
    parse_line,
    segment_name,
)
from archiver.store.stateview import IndexPosition, read_position

# Lines per index transaction during replay: memory stays flat over millions of lines.
_REPLAY_CHUNK: Final = 2000

MANIFEST_ADVICE: Final = (
    "the archive is left untouched. Run `zoom-sms-archiver verify ROOT` for the full report, "
    "then restore ROOT from a replica (`restore`) or a backup"
)
STATE_ADVICE: Final = (
    "the archive is left untouched. Run `zoom-sms-archiver verify ROOT` for the full report "
    "(with --trust, against the checkpoints kept elsewhere); restore ROOT from a replica "
    "(`restore`) or a backup; or, knowingly, remove ROOT/state.sqlite3 to rebuild it from the "
    "manifest as it is (recorded as a state_rebuilt event with the old and new head)"
)


@dataclass(frozen=True)
class Tail:
    """Where appends continue, and what the start-up scan found and did."""

    segment: int  # number of the segment to append to (it may not exist yet)
    size: int  # its length in bytes, once a torn final line is cut
    seq: int  # last seq in the manifest (0: empty)
    head: str  # hash of that line (ZERO_HASH: empty)
    bytes_removed: int = 0  # length of the torn final line; 0 when the tail was whole
    torn_sha256: str = ""  # SHA-256 of those bytes
    recovered: str = ""  # where they went, relative to ROOT (recover only)
    replayed: int = 0  # lines applied to the index
    rebuilt: bool = False  # a new (or lost) state was filled from a non-empty manifest


def corrupt(segment: int, line: int, seq: int | None, detail: str, advice: str) -> Exception:
    where = f"{MANIFEST_DIR}/{segment_name(segment)}" + (f":{line}" if line else "")
    at = f" (seq {seq})" if seq is not None else ""
    return ManifestCorruptError(f"{where}{at}: {detail}; {advice}")


def classify_last(raw: bytes) -> str | None:
    """Why the final line of the manifest is a torn write, or None when it is not.

    Only two shapes qualify: no newline (the write did not finish), or bytes that are not JSON
    at all (zeros or a fragment where the data blocks never reached the disk). A line that is
    JSON was written whole, whatever it says.
    """
    if not raw.endswith(b"\n"):
        return "unterminated line"
    try:
        json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return "not JSON"
    return None


def check_startup(root: Path) -> Tail:
    """The start-up scan without writing anything (not even the state's files). Raises
    ManifestCorruptError for anything but a torn final line. Call it under the lock."""
    position = read_position(root / STATE_FILE, locked=True)
    return _Scan(root / MANIFEST_DIR, position).run()


def recover(directory: Path, index: ManifestIndex, *, started: bool = True) -> Tail:
    """Scan, move a torn final line to ROOT/recovered/, bring `index` up to the last line.

    `started`: the index was opened by a writer before (META_INDEX_STARTED); without it an
    index at seq 0 is new, and filling it from a non-empty manifest is a rebuild."""
    seq, head = index.position()
    position = IndexPosition(seq, head, started) if seq or started else None
    scan = _Scan(directory, position, index)
    tail = scan.run()
    if tail.bytes_removed:
        path = scan.segments[-1][1]
        torn = _read_from(path, tail.size)
        name = keep_evidence(directory.parent, torn)
        _truncate(path, tail.size)
        tail = replace(tail, recovered=name)
    return tail


class _Scan:
    """One streaming pass from the segment that holds the index position to the end."""

    def __init__(
        self, directory: Path, position: IndexPosition | None, index: ManifestIndex | None = None
    ) -> None:
        self.segments = list_segments(directory)
        self.position = position
        self.index = index
        self.pending: list[dict[str, Any]] = []

    def run(self) -> Tail:
        gaps = missing_segments([n for n, _ in self.segments])
        if gaps:
            raise corrupt(gaps[0][0], 0, None, "segment file is missing", MANIFEST_ADVICE)
        known_seq = self.position.seq if self.position else 0
        known_head = self.position.head if self.position else ZERO_HASH
        if not self.segments:
            if known_seq:
                raise self._ahead(None, 0, ZERO_HASH)
            return Tail(1, 0, 0, ZERO_HASH)
        start = _replay_start(self.segments, known_seq)
        seq, head = _link_before(self.segments, start)
        last = self.segments[-1][0]
        size, torn, where = 0, b"", (start, 0)
        for n, path in self.segments[start - 1 :]:
            size = 0
            held: tuple[int, bytes] | None = None  # a bad line: torn only if nothing follows
            with path.open("rb") as stream:
                for lineno, raw in enumerate(stream, 1):
                    if held is not None:
                        raise self._bad_line(n, *held, seq)
                    obj = self._parse(raw, n, lineno, seq, head, last_segment=n == last)
                    if obj is None:
                        held = (lineno, raw)
                        continue
                    seq, head = seq + 1, line_hash(raw[:-1])
                    where = (n, lineno)
                    if seq == known_seq and head != known_head:
                        raise self._other_chain(n, lineno, seq, head)
                    if seq > known_seq:
                        self._replay(obj, seq, head)
                    size += len(raw)
            if held is not None:
                torn = held[1]
        if known_seq > seq:
            raise self._ahead(where, seq, head)
        self._flush(seq, head)
        rebuilt = self.position is None or (known_seq == 0 and not self.position.started)
        return Tail(
            last,
            size,
            seq,
            head,
            bytes_removed=len(torn),
            torn_sha256=hashlib.sha256(torn).hexdigest() if torn else "",
            replayed=seq - known_seq,
            rebuilt=rebuilt and seq > 0,
        )

    def _parse(
        self, raw: bytes, n: int, lineno: int, seq: int, head: str, *, last_segment: bool
    ) -> dict[str, Any] | None:
        """The line as an object if it follows (seq, head); None if it may be a torn final
        line (the caller learns whether anything follows); else ManifestCorruptError."""
        if last_segment and classify_last(raw) is not None:
            return None
        if not raw.endswith(b"\n"):
            raise corrupt(
                n, lineno, seq + 1, "closed segment ends in an unterminated line", MANIFEST_ADVICE
            )
        try:
            obj = parse_line(raw[:-1])
        except ValueError as exc:
            raise corrupt(
                n, lineno, seq + 1, f"not a JSON object ({exc})", MANIFEST_ADVICE
            ) from exc
        problem = link_problem(obj, seq + 1, head)
        if problem is not None:
            raise corrupt(n, lineno, seq + 1, problem, MANIFEST_ADVICE)
        invalid = entry_problems(obj)
        if invalid:
            raise corrupt(n, lineno, seq + 1, "; ".join(invalid), MANIFEST_ADVICE)
        return obj

    def _bad_line(self, n: int, lineno: int, raw: bytes, seq: int) -> Exception:
        why = classify_last(raw) or "not a line that can follow"
        return corrupt(
            n,
            lineno,
            seq + 1,
            f"{why}, and more lines follow it (not a torn write)",
            MANIFEST_ADVICE,
        )

    def _replay(self, obj: dict[str, Any], seq: int, head: str) -> None:
        if self.index is None:
            return
        self.pending.append(obj)
        if len(self.pending) >= _REPLAY_CHUNK:
            self._flush(seq, head)

    def _flush(self, seq: int, head: str) -> None:
        if self.index is not None and self.pending:
            self.index.apply(self.pending, seq, head)
            self.pending = []

    def _other_chain(self, n: int, lineno: int, seq: int, head: str) -> Exception:
        assert self.position is not None
        return corrupt(
            n,
            lineno,
            seq,
            f"hashes to {head[:16]}... but state.sqlite3 saw {self.position.head[:16]}... "
            "there: the line was rewritten, or the manifest is another archive's",
            STATE_ADVICE,
        )

    def _ahead(self, where: tuple[int, int] | None, seq: int, head: str) -> Exception:
        assert self.position is not None
        n, lineno = where if where is not None else (1, 0)
        return corrupt(
            n,
            lineno,
            seq,
            f"the manifest ends here (head {head[:16]}...) but state.sqlite3 has seen up to seq "
            f"{self.position.seq} (head {self.position.head[:16]}...): lines were removed from "
            "the end or a segment was deleted",
            STATE_ADVICE,
        )


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as stream:
        stream.seek(offset)
        return stream.read()


def keep_evidence(root: Path, data: bytes, now: Callable[[], datetime] | None = None) -> str:
    """Write `data` durably to ROOT/recovered/<time>.tail (never over an existing file);
    returns its path relative to ROOT."""
    directory = root / RECOVERED_DIR
    try:
        if not directory.is_dir():
            directory.mkdir(mode=0o700)
            fsync_dir(root)  # the folder's name must be as durable as the bytes in it
        stamp = (now or (lambda: datetime.now(UTC)))().strftime("%Y%m%dT%H%M%S.%fZ")
        for attempt in range(1000):
            name = f"{stamp}.tail" if attempt == 0 else f"{stamp}-{attempt}.tail"
            try:
                fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            except FileExistsError:
                continue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(directory)
            return f"{RECOVERED_DIR}/{name}"
    except OSError as exc:
        raise StorageError(
            exc.errno, f"cannot keep the torn tail in {RECOVERED_DIR}/: {exc}"
        ) from exc
    raise StorageError(f"cannot name a file in {RECOVERED_DIR}/ for the torn tail")


def _truncate(path: Path, length: int) -> None:
    """Cut `path` to `length` bytes durably."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot cut the torn tail of {path.name}: {exc}") from exc


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
        raise corrupt(
            n, 0, None, "closed segment is empty or ends in an unterminated line", MANIFEST_ADVICE
        )
    try:
        seq = parse_line(body).get("seq")
    except ValueError as exc:
        raise corrupt(
            n, 0, None, f"last line is not a JSON object ({exc})", MANIFEST_ADVICE
        ) from exc
    if not isinstance(seq, int):
        raise corrupt(n, 0, None, "last line has no integer seq", MANIFEST_ADVICE)
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
