"""Start-up scan of the manifest: check the whole chain, cut a torn write, catch the index up.

One writer appends whole lines and fsyncs them, and fsyncs a segment before it creates the
next. So a crash or a power cut can leave only one kind of damage: a final line it did not
finish, which is either unterminated or (its end turned to zeros by the filesystem) not JSON
at all. That line, and nothing else, is cut; its bytes are moved to
`ROOT/recovered/<time>.tail` first, never deleted. A complete final line that parses, chains
wrongly or lacks its keys was written whole: that is an edit, not a crash.

Everything else stops the start: a line anywhere (closed segments too) that breaks the chain,
a gap in `seq`, a missing segment, a state cache that has seen more of the manifest than there
is (lines removed from the end, a segment deleted) or another chain; a line other than a
start-up event after a clean stop (recorded in the state, or signed by the daemon's own key);
the newest note the daemon's key signed when the manifest ends before its seq or holds another
line there. The refusal names the segment, line and seq and says what to do.
`check_startup` runs the scan read-only before anything is written to ROOT; `recover` (in the
writer's thread) repeats it, cuts and replays.

The same pass replays every line the state has not seen into the index, so one streaming read
serves both jobs; it costs about what reading and parsing the manifest costs (ARCHIVE-FORMAT.md
gives the figure), with a progress log line per 256 MiB.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archiver.errors import ManifestCorruptError, StorageError
from archiver.ops.logs import get_logger
from archiver.store import checkpoint
from archiver.store.index import ManifestIndex
from archiver.store.layout import (
    CHECKPOINTS_DIR,
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


STARTUP_EVENTS: Final = frozenset({"start", "torn_tail_repaired", "state_rebuilt"})
"""What a daemon writes after a clean stop before it writes anything else: the events of
ManifestWriter.open, then `start` (which it checkpoints at once when it has a key)."""

_PROGRESS_BYTES: Final = 256 * 1024 * 1024  # a progress log line per this much read


def log() -> Any:
    return get_logger(component="manifest")


def is_startup_event(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "event" and obj.get("event") in STARTUP_EVENTS


def chain_step(body: bytes, seq: int, prev: str) -> tuple[dict[str, Any] | None, str | None]:
    """The chain check of one line (without its newline) that should be line `seq` after a
    line hashing to `prev`: (the object, or None if it is no JSON object; why it does not
    chain, or None). The one definition the start-up scan and `verify` share."""
    try:
        obj = parse_line(body)
    except ValueError as exc:
        return None, f"not a JSON object ({exc})"
    return obj, link_problem(obj, seq, prev)


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
    contradicted: str = ""  # a rebuild over a signed note the manifest contradicts: which


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


def check_startup(
    root: Path, trusted: Ed25519PublicKey | None = None, origin: str | None = None
) -> Tail:
    """The start-up scan without writing anything (not even the state's files). Raises
    ManifestCorruptError for anything but a torn final line. Call it under the lock.

    `trusted`, `origin`: the daemon's own public key and note origin. The newest note in
    ROOT/checkpoints/ they verify must then agree with the manifest (its seq is there, with its
    head); and if it is at a `stop` line, only start-up events may follow."""
    position = read_position(root / STATE_FILE, locked=True)
    note = newest_trusted(root, trusted, origin) if trusted is not None else None
    return _Scan(root / MANIFEST_DIR, position, note=note).run()


def newest_trusted(
    root: Path, trusted: Ed25519PublicKey, origin: str | None
) -> tuple[str, checkpoint.Checkpoint] | None:
    """(path relative to ROOT, note) of the newest note in ROOT/checkpoints/ that `trusted`
    signed for `origin`; notes it did not sign (another key, planted) are passed over."""
    for _seq, path in reversed(checkpoint.list_checkpoints(root)):
        try:
            note = checkpoint.parse(path.read_bytes())
        except (OSError, ValueError):
            continue
        if (origin is None or note.origin == origin) and checkpoint.verify(note, [trusted]) is None:
            return f"{CHECKPOINTS_DIR}/{path.name}", note
    return None


def recover(
    directory: Path, index: ManifestIndex, *, started: bool = True, clean_stop: int | None = None
) -> Tail:
    """Scan, move a torn final line to ROOT/recovered/, bring `index` up to the last line.

    `started`: the index was opened by a writer before (META_INDEX_STARTED); without it an
    index at seq 0 is new, and filling it from a non-empty manifest is a rebuild.
    `clean_stop`: the seq of the `stop` line the state recorded (META_CLEAN_STOP)."""
    seq, head = index.position()
    position = IndexPosition(seq, head, started, clean_stop) if seq or started else None
    scan = _Scan(directory, position, index=index)
    tail = scan.run()
    if tail.bytes_removed:
        path = scan.segments[-1][1]
        torn = _read_from(path, tail.size)
        name = keep_evidence(directory.parent, torn)
        _truncate(path, tail.size)
        tail = replace(tail, recovered=name)
    return tail


class _Scan:
    """One streaming pass over every segment: the whole chain is checked at every start
    (closed segments too), and the lines the state has not seen are replayed."""

    def __init__(
        self,
        directory: Path,
        position: IndexPosition | None,
        *,
        index: ManifestIndex | None = None,
        note: tuple[str, checkpoint.Checkpoint] | None = None,
    ) -> None:
        self.segments = list_segments(directory)
        self.position = position
        self.index = index
        self.note = note
        self.rebuild = position is None or (position.seq == 0 and not position.started)
        self.pending: list[dict[str, Any]] = []
        self.sealed: tuple[int, str] | None = None  # (seq of a stop line, who vouches for it)
        self.contradicted = ""

    def run(self) -> Tail:
        gaps = missing_segments([n for n, _ in self.segments])
        if gaps:
            raise corrupt(gaps[0][0], 0, None, "segment file is missing", MANIFEST_ADVICE)
        known_seq = self.position.seq if self.position else 0
        known_head = self.position.head if self.position else ZERO_HASH
        clean_stop = self.position.clean_stop if self.position else None
        if not self.segments:
            if known_seq or clean_stop:
                raise self._ahead(None, 0, ZERO_HASH)
            self._note_beyond(0)
            return Tail(1, 0, 0, ZERO_HASH, contradicted=self.contradicted)
        total = sum(path.stat().st_size for _n, path in self.segments)
        progress = _Progress(total)
        seq, head = 0, ZERO_HASH
        last = self.segments[-1][0]
        size, torn, where = 0, b"", (self.segments[0][0], 0)
        for n, path in self.segments:
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
                    self._guard(obj, (n, lineno), seq, head)
                    if seq > known_seq:
                        self._replay(obj, seq, head)
                    size += len(raw)
                    progress.add(len(raw))
            if held is not None:
                torn = held[1]
        if known_seq > seq or (clean_stop or 0) > seq:
            raise self._ahead(where, seq, head)
        self._note_beyond(seq)
        self._flush(seq, head)
        progress.done(seq)
        return Tail(
            last,
            size,
            seq,
            head,
            bytes_removed=len(torn),
            torn_sha256=hashlib.sha256(torn).hexdigest() if torn else "",
            replayed=seq - known_seq,
            rebuilt=self.rebuild and seq > 0,
            contradicted=self.contradicted,
        )

    def _guard(self, obj: dict[str, Any], where: tuple[int, int], seq: int, head: str) -> None:
        """The checks beyond the chain: the signed note's head, and that nothing but
        start-up events follows a clean stop (the daemon writes nothing else after one)."""
        n, lineno = where
        clean_stop = self.position.clean_stop if self.position else None
        is_stop = obj.get("kind") == "event" and obj.get("event") == "stop"
        if self.note is not None and seq == self.note[1].seq:
            rel, note = self.note
            if head != note.head:
                self._contradict(
                    n,
                    lineno,
                    seq,
                    f"{rel}, signed with this daemon's key, says seq {seq} hashes to "
                    f"{note.head[:16]}..., the manifest's line there hashes to {head[:16]}...: "
                    "lines were replaced (a rewritten chain, or another archive's manifest)",
                )
            elif is_stop:
                self.sealed = (seq, f"the clean stop that {rel} signed")
        if clean_stop is not None and seq == clean_stop and is_stop and self.sealed is None:
            self.sealed = (seq, "the clean stop state.sqlite3 recorded")
        if self.sealed is not None and seq > self.sealed[0] and not is_startup_event(obj):
            what = obj.get("event") if obj.get("kind") == "event" else obj.get("kind")
            raise corrupt(
                n,
                lineno,
                seq,
                f"a {what!s} line after {self.sealed[1]} at seq {self.sealed[0]}: after a clean "
                "stop the daemon writes start-up events and its `start` line (which it "
                "checkpoints before anything else), so this line was added by someone else",
                MANIFEST_ADVICE,
            )

    def _note_beyond(self, seq: int) -> None:
        if self.note is not None and self.note[1].seq > seq:
            rel, note = self.note
            n, _path = self.segments[-1] if self.segments else (1, None)
            self._contradict(
                n,
                0,
                None,
                f"{rel}, signed with this daemon's key, says seq {note.seq} hashes to "
                f"{note.head[:16]}..., but the manifest ends at seq {seq}: lines were removed "
                "from the end or a segment was deleted",
            )

    def _contradict(self, n: int, lineno: int, seq: int | None, detail: str) -> None:
        """A signed note of this daemon the manifest contradicts: the start refuses, unless
        the state was removed knowingly (then the rebuild records it: state_rebuilt)."""
        if not self.rebuild:
            raise corrupt(n, lineno, seq, detail, STATE_ADVICE)
        self.contradicted = detail

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
        obj, problem = chain_step(raw[:-1], seq + 1, head)
        if problem is not None:
            raise corrupt(n, lineno, seq + 1, problem, MANIFEST_ADVICE)
        assert obj is not None
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
        seen = max(self.position.seq, self.position.clean_stop or 0)
        return corrupt(
            n,
            lineno,
            seq,
            f"the manifest ends here (head {head[:16]}...) but state.sqlite3 has seen up to seq "
            f"{seen} (head {self.position.head[:16]}...): lines were removed from "
            "the end or a segment was deleted",
            STATE_ADVICE,
        )


class _Progress:
    """A log line per _PROGRESS_BYTES read, for archives big enough to make a start slow."""

    def __init__(self, total: int) -> None:
        self.total, self.read, self.next = total, 0, _PROGRESS_BYTES
        self.began = time.monotonic()

    def add(self, n: int) -> None:
        self.read += n
        if self.read >= self.next:
            self.next += _PROGRESS_BYTES
            log().info(
                "manifest_check_progress",
                bytes_read=self.read,
                bytes_total=self.total,
                percent=round(100.0 * self.read / self.total, 1),
            )

    def done(self, seq: int) -> None:
        if self.total >= _PROGRESS_BYTES:
            log().info(
                "manifest_checked",
                lines=seq,
                bytes_total=self.total,
                seconds=round(time.monotonic() - self.began, 1),
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


def set_aside_notes(root: Path, after: int) -> list[dict[str, Any]]:
    """Move every note in ROOT/checkpoints/ for a seq beyond `after` into
    ROOT/recovered/checkpoints-<time>/ (never deleted, never overwritten): on a knowing
    rebuild over a shorter manifest, the chain goes on through those seqs, and a note is never
    replaced. Returns [{name, path, sha256, size}] for the state_rebuilt event."""
    notes = [(seq, path) for seq, path in checkpoint.list_checkpoints(root) if seq > after]
    if not notes:
        return []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = root / RECOVERED_DIR / f"checkpoints-{stamp}"
    moved = []
    try:
        if not folder.parent.is_dir():
            folder.parent.mkdir(mode=0o700)
            fsync_dir(root)
        folder.mkdir(mode=0o700)
        fsync_dir(folder.parent)
        for _seq, path in notes:
            data = path.read_bytes()
            os.link(path, folder / path.name, follow_symlinks=False)
            fsync_dir(folder)
            path.unlink()
            moved.append(
                {
                    "name": path.name,
                    "path": f"{RECOVERED_DIR}/{folder.name}/{path.name}",
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                }
            )
        fsync_dir(root / CHECKPOINTS_DIR)
    except OSError as exc:
        raise StorageError(
            exc.errno, f"cannot set the contradicted checkpoints aside in {folder.name}: {exc}"
        ) from exc
    return moved


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
