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
serves both jobs, with a progress log line per 256 MiB and a `progress` callback (systemd's
start timeout: daemon.py). Up to the state's position a line is not parsed but skimmed (its
`prev` and `seq` read at the places the writer puts them, `skim_link`) and hashed: every byte
is still hashed and chained, and the line at the state's position must hash to the state's
head, which makes the lines before it the very lines the daemon wrote or checked (see _Scan).
Only when that proof fails does a second pass parse every line, so a refusal says exactly
what it said before. `check_startup` hands `recover` where it found that position (Checked),
so a start reads the manifest once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archiver.errors import ConfigError, ManifestCorruptError, StorageError
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
_REPORT_BYTES: Final = 16 * 1024 * 1024  # a call of the `progress` callback per this much
_READ_BUFFER: Final = 1024 * 1024

Progress = Callable[[int, int], None]
"""(bytes read, bytes in all) during the scan; called in the scan's thread."""

# A message line as the writer lays it out (manifest.encode_message_line, and canonical() of
# the same keys): {"at":"<27 chars>","digest":"<64 hex>","kind":"message","message_id":"…",
# "prev":"<64 hex>","record":{…},"seq":N,"session_id":"…","source":"…"[,"supersedes":N]}
_SKIM_KIND: Final = b'","kind":"message","message_id":"'  # at 7 + 27 + 12 + 64
_SKIM_PREV: Final = b'","prev":"'
_SKIM_SEQ: Final = b'},"seq":'


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


def skim_link(raw: bytes, seq: int, prev: str) -> bool | None:
    """Whether a whole line (newline included) laid out as the writer lays out a message
    line is line `seq` after a line hashing to `prev`, read at the places of its `prev` and
    `seq` instead of parsed; None for a line of any other layout (the caller parses it).

    Exact for every line the writer writes. Its `at` has 27 characters and its digest 64, so
    `","kind":"message","message_id":"` at offset 110 is a message line's own kind (a quote
    after a comma is no string's content: inside a JSON string `"` is always escaped, and no
    line of another kind has such a key there). For the same reason `","prev":"` cannot start
    inside `message_id`, and `},"seq":` cannot occur after the record, in `session_id`. On
    bytes the writer did not write it may answer anything: the scan trusts its answers only
    once the state's head confirms them (see _Scan)."""
    if not (raw.startswith(_SKIM_KIND, 110) and raw.endswith(b"}\n")):
        return None
    at = raw.find(_SKIM_PREV, 143)
    end = raw.rfind(_SKIM_SEQ)
    if at < 0 or end < at:
        return None
    return raw.startswith(prev.encode(), at + 10) and raw.startswith(b"%d," % seq, end + 8)


@dataclass(frozen=True)
class Checked:
    """Where check_startup found the state's position: the writer's `recover`, in the same
    start, goes on from there rather than reading the manifest again, if nothing changed."""

    position: IndexPosition  # the state's, as the check read it
    files: tuple[tuple[int, int, int, int, int], ...]  # (segment, dev, inode, size, mtime_ns)
    segment: int  # the segment holding line position.seq
    offset: int  # its bytes up to the end of that line
    line: int  # that line's number in it
    clean_stop_sealed: bool  # the line at position.clean_stop (at or before it) is a `stop`


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
    checked: Checked | None = field(default=None, compare=False)  # check_startup only


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
    root: Path,
    trusted: Ed25519PublicKey | None = None,
    origin: str | None = None,
    *,
    progress: Progress | None = None,
    starting: bool = False,
) -> Tail:
    """The start-up scan without writing anything (not even the state's files). Raises
    ManifestCorruptError for anything but a torn final line. Call it under the lock.

    `starting`: the daemon starts next. Without `trusted`, when ROOT's newest note is at the
    manifest's `stop` line with its head (the archive is checkpointed), ConfigError: a run
    without the key would write lines after that stop that no note vouches for.

    `trusted`, `origin`: the daemon's own public key and note origin. The newest note in
    ROOT/checkpoints/ they verify must then agree with the manifest (its seq is there, with its
    head); and if it is at a `stop` line, only start-up events may follow. The Tail's
    `checked` is for `recover` (through ManifestWriter.open) in the same start."""
    position = read_position(root / STATE_FILE, locked=True)
    note = newest_trusted(root, trusted, origin) if trusted is not None else None
    unsigned = newest_note(root, origin) if trusted is None and starting else None
    scan = _Scan(root / MANIFEST_DIR, position, note=note, unsigned=unsigned, progress=progress)
    tail = scan.run()
    if scan.keyless_at_stop:
        raise ConfigError(
            f"this archive is checkpointed ({scan.keyless_at_stop} is at its clean stop) and "
            "no signing key is configured: lines written without the key after that stop are "
            "ones no note vouches for, so every later start with the key would refuse them "
            "and `verify --trust` would report them. Configure archive.signing_key_file (or "
            "LoadCredential=signing_key); if the key is lost, make a new one with `keygen`, "
            "configure it, and give both public keys to `verify --trust` (key rotation)",
            key="archive.signing_key_file",
        )
    return tail


def newest_note(root: Path, origin: str | None) -> tuple[str, checkpoint.Checkpoint] | None:
    """(path relative to ROOT, note) of the newest note in ROOT/checkpoints/ that parses, for
    `origin`; its signature is not checked (there is no key to check it with)."""
    for _seq, path in reversed(checkpoint.list_checkpoints(root)):
        try:
            note = checkpoint.parse(path.read_bytes())
        except (OSError, ValueError):
            continue
        if origin is None or note.origin == origin:
            return f"{CHECKPOINTS_DIR}/{path.name}", note
    return None


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
    directory: Path,
    index: ManifestIndex,
    *,
    started: bool = True,
    clean_stop: int | None = None,
    checked: Checked | None = None,
    progress: Progress | None = None,
    rebuild_owed: bool = False,
    before_cut: Callable[[dict[str, Any]], None] | None = None,
) -> Tail:
    """Scan, move a torn final line to ROOT/recovered/, bring `index` up to the last line.

    `rebuild_owed`: a start that was rebuilding crashed before its state_rebuilt line (the
    state's META_OWED): the scan is a rebuild again. `before_cut`: called with the
    torn_tail_repaired details once the torn bytes are kept, before the cut (the writer makes
    them owed).

    `started`: the index was opened by a writer before (META_INDEX_STARTED); without it an
    index at seq 0 is new, and filling it from a non-empty manifest is a rebuild.
    `clean_stop`: the seq of the `stop` line the state recorded (META_CLEAN_STOP).
    `checked`: what check_startup found; when the state's position and every segment file
    are still as it saw them, the scan goes on from that position (the same checks, from
    there), else it reads everything."""
    seq, head = index.position()
    position = (
        IndexPosition(seq, head, started, clean_stop, rebuild_owed) if seq or started else None
    )
    scan = _Scan(directory, position, index=index, checked=checked, progress=progress)
    tail = scan.run()
    if tail.bytes_removed:
        path = scan.segments[-1][1]
        torn = _read_from(path, tail.size)
        name = keep_evidence(directory.parent, torn)
        if before_cut is not None:
            before_cut(
                {
                    "segment": segment_name(tail.segment),
                    "bytes_removed": tail.bytes_removed,
                    "sha256": tail.torn_sha256,
                    "recovered": name,
                }
            )
        _truncate(path, tail.size)
        tail = replace(tail, recovered=name)
    return tail


class _Doubt(Exception):
    """The skimming pass cannot vouch for what it read: a pass that parses every line decides."""


_STATE_STOP: Final = "the clean stop state.sqlite3 recorded"


class _Scan:
    """One streaming pass over every segment: the whole chain is checked at every start
    (closed segments too), and the lines the state has not seen are replayed.

    With a state position (seq S, head H) a first pass skims the lines up to S: skim_link
    reads their `prev` and `seq`, and each is hashed. The lines it cannot read, and those the
    guard must see (at the clean stop, at the note, after a seal), are parsed as always. When
    line S hashes to H, it is the line the daemon wrote or checked (SHA-256 does not collide),
    its `prev` names the line before it, and so back to line 1: every line up to S is the
    daemon's own, byte for byte, so the full check would only repeat a check they passed.
    Anything else before S (a link that does not hold, a line that fails, the end before S,
    another head at S) proves nothing, since a skimmed line before it may be what is wrong: the
    pass is dropped and a second one parses every line, refusing exactly as it always did.
    Lines after S are parsed in either pass (they are replayed, and their errors are final)."""

    def __init__(
        self,
        directory: Path,
        position: IndexPosition | None,
        *,
        index: ManifestIndex | None = None,
        note: tuple[str, checkpoint.Checkpoint] | None = None,
        unsigned: tuple[str, checkpoint.Checkpoint] | None = None,
        checked: Checked | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.segments = list_segments(directory)
        self.position = position
        self.index = index
        self.note = note
        # Without a key: the newest note, unchecked; keyless_at_stop names it when the line
        # at its seq is a `stop` with its head (the archive is checkpointed: check_startup).
        self.unsigned = unsigned
        self.keyless_at_stop = ""
        self.resume_from = checked
        self.report = progress
        self.rebuild = position is None or (position.seq == 0 and not position.started)
        self.rebuild = self.rebuild or (position is not None and position.rebuild_owed)
        self.pending: list[dict[str, Any]] = []
        self.sealed: tuple[int, str] | None = None  # (seq of a stop line, who vouches for it)
        self.contradicted = ""
        self.clean_sealed = False  # the line at the state's clean stop is a stop
        self.anchored = False  # the line at the state's position was found, with its head
        self.checked: Checked | None = None

    def run(self) -> Tail:
        gaps = missing_segments([n for n, _ in self.segments])
        if gaps:
            raise corrupt(gaps[0][0], 0, None, "segment file is missing", MANIFEST_ADVICE)
        if not self.segments:
            if self.position is not None and (self.position.seq or self.position.clean_stop):
                raise self._ahead(None, 0, ZERO_HASH)
            self._note_beyond(0)
            return Tail(1, 0, 0, ZERO_HASH, contradicted=self.contradicted)
        files = tuple(_identity(n, path) for n, path in self.segments)
        resume = self.resume_from
        if resume is not None and (resume.position != self.position or resume.files != files):
            log().info("manifest_read_again", reason="changed since the start-up check")
            resume = None
        if resume is None and self.position is not None and self.position.seq > 0:
            try:
                return self._pass(files, skim=True)
            except _Doubt:
                pass
            except ManifestCorruptError:
                if self.anchored:  # after line S: the parsing pass would say the same
                    raise
            self.pending, self.sealed, self.clean_sealed = [], None, False
            self.anchored, self.checked = False, None
            tail = self._pass(files)
            # Lines the writer did not lay out (another version's?) yet whole: only slower.
            log().info("manifest_checked_by_parsing", state_seq=self.position.seq)
            return tail
        return self._pass(files, resume=resume)

    def _pass(  # noqa: PLR0912, PLR0915 - one loop, kept whole for speed
        self,
        files: tuple[tuple[int, int, int, int, int], ...],
        *,
        skim: bool = False,
        resume: Checked | None = None,
    ) -> Tail:
        known_seq = self.position.seq if self.position else 0
        known_head = self.position.head if self.position else ZERO_HASH
        clean_stop = self.position.clean_stop if self.position else None
        note_seq = self.note[1].seq if self.note is not None else None
        unsigned_seq = self.unsigned[1].seq if self.unsigned is not None else None
        seq, head = 0, ZERO_HASH
        last = self.segments[-1][0]
        size, torn, where = 0, b"", (self.segments[0][0], 0)
        first, skip = self.segments[0][0], 0
        if resume is not None:
            first, skip = resume.segment, resume.offset
            seq, head, where = known_seq, known_head, (resume.segment, resume.line)
            if resume.clean_stop_sealed and clean_stop is not None:
                self.sealed = (clean_stop, _STATE_STOP)
        total = sum(size for n, _d, _i, size, _t in files if n >= first) - skip
        progress = _Progress(total, self.report)
        sha256 = hashlib.sha256
        # Skim while below `until`: the line at the state's position, or before a line the
        # guard must read; no further once it has something to watch (a seal) or a line may
        # be torn.
        guarded = sorted(g for g in (clean_stop, note_seq, unsigned_seq) if g is not None)
        until = _skim_until(seq, known_seq, guarded) if skim else 0
        skimming = skim
        for n, path in self.segments:
            if n < first:
                continue
            size, start = 0, 1
            held: tuple[int, bytes] | None = None  # a bad line: torn only if nothing follows
            with path.open("rb", buffering=_READ_BUFFER) as stream:
                if n == first and skip:
                    stream.seek(skip)
                    size, start = skip, (resume.line if resume is not None else 0) + 1
                shown, mark = size, size + _REPORT_BYTES
                for lineno, raw in enumerate(stream, start):
                    if seq < until:
                        follows = skim_link(raw, seq + 1, head)
                        if follows is not None:
                            if not follows:
                                raise _Doubt
                            seq, head = seq + 1, sha256(raw[:-1]).hexdigest()
                            size += len(raw)
                            if size >= mark:
                                progress.add(size - shown)
                                shown, mark = size, size + _REPORT_BYTES
                            if seq == known_seq:
                                if head != known_head:
                                    raise _Doubt
                                where = (n, lineno)
                                self._anchor(files, n, size, lineno)
                            continue
                    if held is not None:
                        raise self._bad_line(n, *held, seq)
                    obj = self._parse(raw, n, lineno, seq, head, last_segment=n == last)
                    if obj is None:
                        held, until, skimming = (lineno, raw), 0, False
                        continue
                    seq, head = seq + 1, line_hash(raw[:-1])
                    where = (n, lineno)
                    if seq == known_seq and head != known_head:
                        raise self._other_chain(n, lineno, seq, head)
                    self._guard(obj, (n, lineno), seq, head)
                    if skimming:
                        skimming = self.sealed is None
                        until = _skim_until(seq, known_seq, guarded) if skimming else 0
                    if seq == known_seq:
                        self._anchor(files, n, size + len(raw), lineno)
                    if seq > known_seq:
                        self._replay(obj, seq, head)
                    size += len(raw)
                    if size >= mark:
                        progress.add(size - shown)
                        shown, mark = size, size + _REPORT_BYTES
            if size > shown:
                progress.add(size - shown)
            if held is not None:
                torn = held[1]
        if skim and not self.anchored:
            raise _Doubt
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
            checked=self.checked,
        )

    def _anchor(
        self, files: tuple[tuple[int, int, int, int, int], ...], n: int, offset: int, line: int
    ) -> None:
        """Line S is found, with the state's head: what comes before it is the daemon's."""
        assert self.position is not None
        self.anchored = True
        self.checked = Checked(self.position, files, n, offset, line, self.clean_sealed)

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
        if self.unsigned is not None and seq == self.unsigned[1].seq:
            rel, note = self.unsigned
            self.keyless_at_stop = rel if is_stop and head == note.head else ""
        if clean_stop is not None and seq == clean_stop and is_stop:
            self.clean_sealed = True
            if self.sealed is None:
                self.sealed = (seq, _STATE_STOP)
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
    """A log line per _PROGRESS_BYTES read, for archives big enough to make a start slow, and
    a call of `report` at the start and at each `add` (per _REPORT_BYTES and per segment)."""

    def __init__(self, total: int, report: Progress | None) -> None:
        self.total, self.read, self.next = total, 0, _PROGRESS_BYTES
        self.report = report
        self.began = time.monotonic()
        if report is not None:
            report(0, total)

    def add(self, n: int) -> None:
        self.read += n
        if self.report is not None:
            self.report(self.read, self.total)
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


def _skim_until(seq: int, known_seq: int, guarded: list[int]) -> int:
    """The last seq the skim may take after `seq`: the state's, or the one before the next
    line the guard reads."""
    return min([known_seq] + [g - 1 for g in guarded if g > seq])


def _identity(n: int, path: Path) -> tuple[int, int, int, int, int]:
    """What tells that a segment file is still the one that was read: the same file (device,
    inode) with the same size and modification time."""
    info = path.stat()
    return n, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


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
