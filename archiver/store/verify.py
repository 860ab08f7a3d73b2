"""`verify ROOT`: re-check everything the archive format promises, without trusting state.

Streams the manifest a line at a time and keeps the blob references in a temporary on-disk
SQLite database, so memory stays flat for millions of lines. Each problem names the place an
operator can open: `000003.jsonl:17` for a line, `blobs/sha256/ab/<hex>` for a blob. After a
broken link the chain is followed on from the line actually found, so one deleted line is one
problem, not a million.

Beyond each line: blob sizes always (hashes for `--sample` percent), the rules across lines
(store/crosscheck.py), and the chain head against signed checkpoints (`trust`) or a head
obtained elsewhere (`expect_head`). What a hash chain alone cannot show is a consistent
rewrite of the whole chain or the removal of lines from the very end: only a head kept
outside the archive can, which is what checkpoints are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import re
import sqlite3
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archiver.store import checkpoint
from archiver.store.checkpoint import list_checkpoints
from archiver.store.crosscheck import CrossCheck
from archiver.store.layout import (
    BLOBS_DIR,
    CHECKPOINTS_DIR,
    MANIFEST_DIR,
    RECOVERED_DIR,
    STATE_FILE,
    blob_relpath,
    missing_segments,
)
from archiver.store.manifest import (
    ZERO_HASH,
    canonical,
    entry_problems,
    is_hex_digest,
    line_hash,
    line_problems,
    parse_segment_name,
    segment_name,
)
from archiver.store.recovery import chain_step, is_startup_event
from archiver.store.stateview import pending_attachments

_NOTE_FILE: Final = re.compile(r"\d{12,}\.note")
MAX_PROBLEMS: Final = 1000  # beyond this the report only counts them
TAIL_WAIT: Final = 2.0  # seconds an unterminated last line is given to be finished


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    where: str  # "000001.jsonl:3", "manifest/000002.jsonl" or "blobs/sha256/ab/<hex>"
    detail: str
    segment: str | None = None  # the manifest line it concerns, when there is one
    line: int | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Place:
    """A manifest line: segment file, line number in it, its seq."""

    segment: str
    line: int
    seq: int

    @property
    def where(self) -> str:
        return f"{self.segment}:{self.line}"


@dataclass
class VerifyReport:
    root: str
    ok: bool = False
    segments: int = 0
    lines: int = 0
    last_seq: int = 0
    head: str = ZERO_HASH
    messages: int = 0
    attachments: int = 0
    attachments_failed: int = 0
    events: int = 0
    blobs_checked: int = 0
    sample_pct: float = 100.0
    attachments_pending: int = 0  # listed, no line yet, still in the state's download ledger
    checkpoints_seen: int = 0
    checkpoints_checked: int = 0  # signature verified by a trusted key and head found
    origins: list[str] = field(default_factory=list)  # of the notes seen (one per archive)
    problems: list[Problem] = field(default_factory=list)
    problems_omitted: int = 0
    warnings: list[Problem] = field(default_factory=list)
    pending: list[Problem] = field(default_factory=list)  # problems only with `complete`


def verify_archive(
    root: Path,
    *,
    sample_pct: float = 100.0,
    rng_seed: int | None = None,
    trust: Sequence[Ed25519PublicKey] = (),
    expect_head: tuple[int, str] | None = None,
    complete: bool = False,
    account: str | None = None,
    checkpoint_dirs: Sequence[Path] = (),
) -> VerifyReport:
    """Check the chain, every line, the rules across lines, every blob's size and (for
    `sample_pct` percent of them) hash; with `trust`, every checkpoint (in ROOT/checkpoints/
    and in each of `checkpoint_dirs`, notes kept elsewhere); with `expect_head`, that the
    manifest holds that (seq, hash). `complete`: a pending attachment is a problem.
    `account`: every note's origin must be that account's."""
    if not 0.0 <= sample_pct <= 100.0:
        raise ValueError(f"sample_pct must be within 0..100, not {sample_pct}")
    return _Verifier(
        root,
        sample_pct=sample_pct,
        rng_seed=rng_seed,
        trust=list(trust),
        expect_head=expect_head,
        complete=complete,
        account=account,
        checkpoint_dirs=list(checkpoint_dirs),
    ).run()


class _Verifier:
    def __init__(
        self,
        root: Path,
        *,
        sample_pct: float,
        rng_seed: int | None,
        trust: list[Ed25519PublicKey],
        expect_head: tuple[int, str] | None,
        complete: bool,
        account: str | None = None,
        checkpoint_dirs: list[Path] | None = None,
    ) -> None:
        self.root = root
        self.account, self.checkpoint_dirs = account, checkpoint_dirs or []
        # The rule after a `stop` line: the place of the stop; whether a trusted note
        # vouched for it (then only a vouched-for `start` line ends the rule).
        self.after_stop: Place | None = None
        self.signed_stop: Place | None = None
        self.segment_starts: list[tuple[int, Path]] = []  # (seq of first line, segment)
        self.past_claims: list[tuple[int, str, Place]] = []  # state_rebuilt old heads
        self.real_root = root.resolve()
        self.report = VerifyReport(root=str(root), sample_pct=sample_pct)
        self.rng = random.Random(rng_seed)  # noqa: S311 - picks a sample, guards nothing
        self.seq, self.head = 0, ZERO_HASH
        self.trust, self.complete = trust, complete
        # seq -> (what claims a head there, the head it claims); filled in before the stream
        self.heads_wanted: dict[int, list[tuple[str, str]]] = {}
        if expect_head is not None:
            seq, head = expect_head
            self.heads_wanted[seq] = [("--expect-head", head)]
        # "" is a private temporary on-disk database, deleted on close: the set of referenced
        # blobs can outgrow memory.
        self.refs = sqlite3.connect("")
        self.refs.execute("CREATE TABLE refs (sha256 TEXT PRIMARY KEY) WITHOUT ROWID")
        self.cross = CrossCheck()

    def problem(self, kind: str, where: str, detail: str, place: Place | None = None) -> None:
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(_problem(kind, where, detail, place))
        else:
            self.report.problems_omitted += 1

    def warning(self, kind: str, where: str, detail: str) -> None:
        if len(self.report.warnings) < MAX_PROBLEMS:
            self.report.warnings.append(Problem(kind, where, detail))

    def run(self) -> VerifyReport:
        try:
            self.checkpoints()
            directory = self.root / MANIFEST_DIR
            if not directory.is_dir():
                self.problem("manifest_missing", f"{MANIFEST_DIR}/", "no manifest folder")
            else:
                segments = self.segments(directory)
                for i, (n, path) in enumerate(segments):
                    self.segment(n, path, last=i == len(segments) - 1)
            self.orphans()
            self.unsettled()
            self.heads_not_found()
            self.rebuilt_heads()
        finally:
            self.refs.close()
            self.cross.close()
        self.report.last_seq, self.report.head = self.seq, self.head
        self.report.ok = not self.report.problems and not self.report.problems_omitted
        return self.report

    def checkpoints(self) -> None:
        """Read ROOT/checkpoints/ (and the folders of notes kept elsewhere) first, so the
        stream can compare each one's head."""
        self.checkpoint_entries()
        notes = [
            (seq, path, f"{CHECKPOINTS_DIR}/{path.name}")
            for seq, path in list_checkpoints(self.root)
        ]
        for directory in self.checkpoint_dirs:
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                if entry.name.endswith(".note") and entry.is_file(follow_symlinks=False):
                    notes.append((0, Path(entry.path), entry.path))
        self.report.checkpoints_seen = len(notes)
        origins: dict[str, str] = {}
        parsed = []
        for seq, path, rel in notes:
            try:
                note = checkpoint.parse(path.read_bytes())
            except (OSError, ValueError) as exc:
                if self.trust:
                    self.problem("checkpoint_invalid", rel, f"not a checkpoint note: {exc}")
                continue
            origins.setdefault(note.origin, rel)
            parsed.append((seq, rel, note))
        self.report.origins = sorted(origins)
        self.origin_rules(origins)
        if not self.trust:
            if notes:
                self.warning(
                    "checkpoints_not_checked",
                    f"{CHECKPOINTS_DIR}/",
                    f"{len(notes)} checkpoints seen, none checked: give --trust PUB",
                )
            return
        if not notes:
            self.problem("checkpoint_missing", f"{CHECKPOINTS_DIR}/", "no checkpoint to check")
        for seq, rel, note in parsed:
            refused = checkpoint.verify(note, self.trust)
            if refused is not None:
                self.problem("checkpoint_signature", rel, refused)
                continue
            if seq and note.seq != seq:
                self.problem("checkpoint_invalid", rel, f"the note is for seq {note.seq}")
                continue
            self.heads_wanted.setdefault(note.seq, []).append((rel, note.head))

    def checkpoint_entries(self) -> None:
        """Anything in ROOT/checkpoints/ that is not a regular note file: a link or a folder
        where a note should be is a problem (the daemon writes regular files only)."""
        directory = self.root / CHECKPOINTS_DIR
        if not directory.is_dir():
            return
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = f"{CHECKPOINTS_DIR}/{entry.name}"
            if not entry.is_file(follow_symlinks=False):
                self.problem("checkpoint_not_file", rel, "not a regular file (a link or folder)")
            elif not _NOTE_FILE.fullmatch(entry.name):
                self.warning("unexpected_file", rel, "not a checkpoint note name")

    def origin_rules(self, origins: dict[str, str]) -> None:
        """One archive, one account: every note must carry the same origin (and, with
        --account, that account's)."""
        if self.account is not None:
            wanted = checkpoint.origin_for(self.account)
            for origin, rel in sorted(origins.items()):
                if origin != wanted:
                    self.problem(
                        "checkpoint_origin", rel, f"origin {origin!r}, not {wanted!r} (--account)"
                    )
        elif len(origins) > 1:
            for origin, rel in sorted(origins.items()):
                self.problem(
                    "checkpoint_origin",
                    rel,
                    f"origin {origin!r}: the notes of one archive carry {len(origins)} origins "
                    "(one key per account; give --account ID to say which is right)",
                )

    def segments(self, directory: Path) -> list[tuple[int, Path]]:
        found = []
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            n = parse_segment_name(entry.name)
            if n is None or not entry.is_file(follow_symlinks=False):
                self.warning("unexpected_file", f"{MANIFEST_DIR}/{entry.name}", "not a segment")
            else:
                found.append((n, Path(entry.path)))
        found.sort()
        for first, last in missing_segments([n for n, _ in found]):
            names = segment_name(first) + (f" .. {segment_name(last)}" if last > first else "")
            self.problem("segment_missing", f"{MANIFEST_DIR}/{names}", "segment file is missing")
        self.report.segments = len(found)
        return found

    def segment(self, n: int, path: Path, *, last: bool) -> None:
        name = segment_name(n)
        lineno = offset = 0
        self.segment_starts.append((self.seq + 1, path))
        with path.open("rb") as stream:
            for lineno, raw in enumerate(stream, 1):
                if last and not raw.endswith(b"\n"):
                    # The end of the file as verify found it; lines written after are not
                    # its business (the stream would read on into them).
                    self.line(_finished_line(path, offset, raw), name, lineno)
                    break
                self.line(raw, name, lineno)
                offset += len(raw)
        if lineno == 0:
            detail = "segment is empty"
            if last:  # a crash right after rotation leaves one; the writer appends to it
                self.warning("empty_segment", f"{MANIFEST_DIR}/{name}", detail)
            else:
                self.problem("empty_segment", f"{MANIFEST_DIR}/{name}", detail)

    def line(self, raw: bytes, segment: str, lineno: int) -> None:
        self.report.lines += 1
        body = raw[:-1] if raw.endswith(b"\n") else raw
        expected, self.head, prev = self.seq + 1, line_hash(body), self.head
        self.seq = expected
        place = Place(segment, lineno, expected)
        where = place.where
        if body is raw:
            self.problem("unterminated_line", where, "no newline at the end (a torn write?)", place)
        obj, link = chain_step(body, expected, prev)
        if obj is None:
            self.problem("invalid_json", where, link or "not a JSON object", place)
            return
        if canonical(obj) != body:
            self.problem(
                "not_canonical", where, "bytes differ from the canonical JSON encoding", place
            )
        if link is not None:
            self.problem("chain_broken", where, link, place)
            if isinstance(obj.get("seq"), int) and not isinstance(obj["seq"], bool):
                self.seq = obj["seq"]  # follow the chain on from what is there
                place = Place(segment, lineno, self.seq)
        vouched = self.head_claims(place)
        self.stop_rule(obj, place, vouched=vouched)
        problems = line_problems(obj)
        for detail in problems:
            self.problem("bad_entry", where, detail, place)
        self.count(obj, place, problems)

    def stop_rule(self, obj: dict[str, Any], place: Place, *, vouched: bool) -> None:
        """After a `stop` the daemon writes its start-up events and its `start` line, and
        (with a key) signs that start line before anything else. So a line after a stop
        before the next `start`, or (with --trust) after a checkpointed stop before the next
        checkpointed `start`, is not the daemon's."""
        event = obj.get("event") if obj.get("kind") == "event" else None
        if event == "stop":
            if self.after_stop is not None or self.signed_stop is not None:
                # A second stop with no start between (the daemon writes one stop per run),
                # or after a checkpointed stop with no checkpointed start between (an unsigned
                # start, stop, start must not end that rule).
                self.intrusion("stop", place)
            self.after_stop = place
            if vouched:
                self.signed_stop = place
            return
        if is_startup_event(obj):
            if event == "start":
                self.after_stop = None
                if vouched:
                    self.signed_stop = None
            return
        if self.after_stop is not None or self.signed_stop is not None:
            self.intrusion(f"{event or obj.get('kind')!s}", place)

    def intrusion(self, what: str, place: Place) -> None:
        """A line the stop rule says is not the daemon's: one problem per intrusion."""
        stop = self.after_stop or self.signed_stop
        assert stop is not None
        after = (
            f"the stop at seq {stop.seq} ({stop.where}) and no `start` line between"
            if self.after_stop is not None
            else f"the checkpointed stop at seq {stop.seq} ({stop.where}) with no checkpointed "
            "`start` line between (the daemon signs its start line before it writes anything "
            "else)"
        )
        self.problem(
            "after_stop",
            place.where,
            f"a {what} line after {after}: not written by the daemon",
            place,
        )
        self.after_stop = self.signed_stop = None

    def head_claims(self, place: Place) -> bool:
        """Check the heads claimed for this seq; whether a trusted checkpoint vouched for it."""
        vouched = False
        for source, head in self.heads_wanted.pop(place.seq, []):
            if head != self.head:
                self.problem(
                    "head_mismatch",
                    source,
                    f"says seq {place.seq} hashes to {head[:16]}..., the manifest's line there "
                    f"hashes to {self.head[:16]}... (the chain was rewritten or lines replaced)",
                    place,
                )
            elif source != "--expect-head":
                self.report.checkpoints_checked += 1
                vouched = True
        return vouched

    def count(self, obj: dict[str, Any], place: Place, problems: list[str]) -> None:
        kind = obj.get("kind")
        if kind == "message":
            self.report.messages += 1
            # A bad digest or time is that line's problem; its place in the rules across
            # lines (duplicates, supersedes) only needs the keys to be there.
            if not entry_problems(obj) and isinstance(obj.get("seq"), int):
                for detail in self.cross.message(obj):
                    kind = "duplicate_line" if detail.startswith("duplicate") else "bad_supersedes"
                    self.problem(kind, place.where, detail, place)
        elif kind == "attachment_failed":
            self.report.attachments_failed += 1
            if not problems:
                self.cross.settled(obj)
        elif kind == "event":
            self.report.events += 1
            if not problems:
                self.event(obj, place)
        elif kind == "attachment":
            self.report.attachments += 1
            if not problems:
                self.cross.settled(obj)
                self.blob(obj, place)

    def event(self, obj: dict[str, Any], place: Place) -> None:
        """What start-up recorded: the evidence it kept must be there, unchanged; a rebuild
        that lost lines (or went on from another chain) stays a problem for good."""
        if obj["event"] == "torn_tail_repaired":
            self.evidence(obj.get("recovered"), obj.get("sha256"), obj.get("bytes_removed"), place)
        elif obj["event"] == "state_rebuilt":
            for item in obj.get("checkpoints_set_aside") or []:
                if isinstance(item, dict):
                    self.evidence(item.get("path"), item.get("sha256"), item.get("size"), place)
            old_seq, old_head, new_seq = obj.get("old_seq"), obj.get("old_head"), obj.get("new_seq")
            if not isinstance(old_seq, int) or isinstance(old_seq, bool):
                return
            if isinstance(new_seq, int) and old_seq > new_seq:
                self.problem(
                    "lines_lost",
                    place.where,
                    f"state_rebuilt: old_seq {old_seq} > new_seq {new_seq}: the archive had "
                    f"reached seq {old_seq} and lost {old_seq - new_seq} lines from its end",
                    place,
                )
            elif isinstance(old_head, str):
                self.past_claims.append((old_seq, old_head, place))

    def evidence(self, rel: object, sha: object, size: object, place: Place) -> None:
        """A file start-up kept in ROOT/recovered/, named by an event with its hash and size."""
        where = place.where
        if not isinstance(rel, str) or not rel.startswith(f"{RECOVERED_DIR}/") or ".." in rel:
            self.problem("evidence_missing", where, f"names no file in {RECOVERED_DIR}/", place)
            return
        path = self.root / rel
        try:
            info = path.lstat()
        except OSError:
            self.problem("evidence_missing", rel, f"kept by the event at {where}, now gone", place)
            return
        if not stat.S_ISREG(info.st_mode) or not path.resolve().is_relative_to(self.real_root):
            self.problem("evidence_missing", rel, "not a regular file inside the archive", place)
            return
        with path.open("rb") as stream:
            actual = hashlib.file_digest(stream, "sha256").hexdigest()
        if actual != sha or info.st_size != size:
            self.problem(
                "evidence_altered",
                rel,
                f"{info.st_size} bytes hashing to {actual[:16]}...; the event at {where} kept "
                f"{size} bytes hashing to {str(sha)[:16]}...",
                place,
            )

    def rebuilt_heads(self) -> None:
        """Each state_rebuilt's old head must be the manifest's line at old_seq: one more
        read of the few segments concerned, after the stream."""
        for old_seq, old_head, place in self.past_claims:
            found = self.hash_at(old_seq)
            if found != old_head:
                self.problem(
                    "lines_lost",
                    place.where,
                    f"state_rebuilt: old head {old_head[:16]}... at seq {old_seq} is not in the "
                    f"chain (the line there hashes to {(found or '-')[:16]}...): the archive "
                    "went on from another chain",
                    place,
                )

    def hash_at(self, seq: int) -> str | None:
        starts = [(first, path) for first, path in self.segment_starts if first <= seq]
        if not starts or seq > self.seq:
            return None
        first, path = starts[-1]
        with path.open("rb") as stream:
            for i, raw in enumerate(stream):
                if first + i == seq:
                    return line_hash(raw.rstrip(b"\n"))
        return None

    def blob(self, obj: dict[str, Any], place: Place) -> None:
        sha, rel, where = obj["sha256"], blob_relpath(obj["sha256"]), place.where
        if obj["blob"] != rel:
            self.problem("blob_path", where, f"blob {obj['blob']!r} should be {rel}", place)
        if self.refs.execute("INSERT OR IGNORE INTO refs VALUES (?)", (sha,)).rowcount == 0:
            return  # the same content again: checked already
        path = self.root / rel
        try:
            info = path.lstat()
        except FileNotFoundError:
            self.problem("blob_missing", where, f"{rel} does not exist", place)
            return
        if not stat.S_ISREG(info.st_mode) or not path.resolve().is_relative_to(self.real_root):
            self.problem("blob_not_file", rel, "not a regular file inside the archive root", place)
            return
        size = obj["size"]  # always, whatever the sample: a cut blob is damage
        if not isinstance(size, int) or isinstance(size, bool) or size != info.st_size:
            self.problem("blob_size", rel, f"{info.st_size} bytes, line {where} says {size}", place)
        if self.rng.random() * 100.0 < self.report.sample_pct:
            self.report.blobs_checked += 1
            with path.open("rb") as stream:
                actual = hashlib.file_digest(stream, "sha256").hexdigest()
            if actual != sha:
                self.problem(
                    "blob_hash_mismatch", rel, f"content hashes to {actual} ({where})", place
                )

    def unsettled(self) -> None:
        """Listed attachments without a line: pending if the daemon still has them to do."""
        ledger = pending_attachments(self.root / STATE_FILE)
        # No state (an auditor's copy, or it was lost): nothing is known to be pending.
        indexed, pending = ledger if ledger is not None else (2**63, set())
        for sid, mid, aid, seq in self.cross.unsettled():
            where = f"message {mid!r} of session {sid!r} (seq {seq})"
            item = _problem("attachment_pending", where, f"attachment {aid!r}", None, seq)
            # A line the state has not replayed yet is not in its ledger: the daemon
            # enqueues it at its next start.
            if (sid, mid, aid) in pending or seq > indexed:
                self.report.attachments_pending += 1
                if self.complete:
                    self.problem(item.kind, where, f"{item.detail} has no line yet (pending)")
                elif len(self.report.pending) < MAX_PROBLEMS:
                    self.report.pending.append(item)
            else:
                self.problem(
                    "attachment_missing",
                    where,
                    f"attachment {aid!r} has no attachment or attachment_failed line, and "
                    "the state has no download pending for it",
                )

    def heads_not_found(self) -> None:
        for seq, claims in sorted(self.heads_wanted.items()):
            for source, head in claims:
                self.problem(
                    "head_missing",
                    source,
                    f"says seq {seq} hashes to {head[:16]}..., but the manifest ends at seq "
                    f"{self.seq}: lines were removed from its end",
                )

    def orphans(self) -> None:
        base = self.root / BLOBS_DIR
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                rel = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if not is_hex_digest(name) or rel != blob_relpath(name):
                    self.warning("unexpected_file", rel, "not a blob name")
                elif not self.refs.execute(
                    "SELECT 1 FROM refs WHERE sha256 = ?", (name,)
                ).fetchone():
                    self.warning(
                        "orphan_blob",
                        rel,
                        "no attachment line refers to it (interrupted download?)",
                    )


def _finished_line(path: Path, offset: int, raw: bytes) -> bytes:
    """The last line of the last segment, once whole. On a live archive it may be a write in
    progress, which the daemon finishes within milliseconds: read it again for up to
    TAIL_WAIT seconds. A line still unterminated then is a torn tail, which the daemon's next
    start cuts (DESIGN.md invariant 3), and is reported as it is."""
    deadline = time.monotonic() + TAIL_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.05)
        with path.open("rb") as stream:
            stream.seek(offset)
            line = stream.readline()
        if line.endswith(b"\n"):
            return line
        if len(line) > len(raw):
            raw = line
    return raw


def _problem(
    kind: str, where: str, detail: str, place: Place | None, seq: int | None = None
) -> Problem:
    if place is None:
        return Problem(kind, where, detail, seq=seq)
    return Problem(kind, where, detail, place.segment, place.line, place.seq)


def render_report(report: VerifyReport) -> str:
    """A human summary: the verdict first, then counts, then each problem and warning."""
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    out = [
        f"archive {report.root}: {verdict}",
        f"  segments {report.segments}, lines {report.lines}, last seq {report.last_seq}",
        f"  head {report.head}",
        f"  messages {report.messages}, attachments {report.attachments}, "
        f"failed attachments {report.attachments_failed}, events {report.events}",
        f"  blobs re-hashed {report.blobs_checked} (sample {report.sample_pct:g}%), "
        "every blob's size checked",
        f"  attachments pending download {report.attachments_pending}",
        _checkpoint_summary(report),
    ]
    sections = (
        ("problems", report.problems),
        ("warnings", report.warnings),
        ("pending (a problem only with --complete)", report.pending),
    )
    for title, items in sections:
        if items:
            out.append(f"{title} ({len(items)}):")
            out.extend(f"  {p.where}  {p.kind}: {p.detail}" for p in items)
    if report.problems_omitted:
        out.append(f"  ... and {report.problems_omitted} more problems")
    return "\n".join(out)


def _checkpoint_summary(report: VerifyReport) -> str:
    return _checkpoint_counts(report) + (
        f"\n  checkpoint origins {', '.join(report.origins)}" if report.origins else ""
    )


def _checkpoint_counts(report: VerifyReport) -> str:
    if report.checkpoints_checked or any(
        p.kind.startswith(("checkpoint", "head_")) for p in report.problems
    ):
        return (
            f"  checkpoints seen {report.checkpoints_seen}, "
            f"verified against trusted keys {report.checkpoints_checked}"
        )
    if report.checkpoints_seen:
        return (
            f"  checkpoints seen {report.checkpoints_seen}, NOT checked "
            "(give --trust PUB: without it a consistent rewrite of the whole chain passes)"
        )
    return "  checkpoints none (the head is not anchored outside the manifest)"


def report_to_json(report: VerifyReport) -> dict[str, Any]:
    return dataclasses.asdict(report)
