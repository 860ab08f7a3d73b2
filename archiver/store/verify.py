"""`verify ROOT`: re-check everything the archive format promises, without trusting state.

Streams the manifest a line at a time and keeps the blob references in a temporary on-disk
SQLite database, so memory stays flat for millions of lines. Each problem names the place an
operator can open: `000003.jsonl:17` for a line, `blobs/sha256/ab/<hex>` for a blob. After a
broken link the chain is followed on from the line actually found, so one deleted line is one
problem, not a million.

What a hash chain cannot show: the removal of lines from the very end. `head` in the report is
the hash of the last line; an auditor who noted it earlier can compare.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from archiver.store.layout import BLOBS_DIR, MANIFEST_DIR, blob_relpath, missing_segments
from archiver.store.manifest import (
    ZERO_HASH,
    canonical,
    is_hex_digest,
    line_hash,
    line_problems,
    link_problem,
    parse_line,
    parse_segment_name,
    segment_name,
)

MAX_PROBLEMS: Final = 1000  # beyond this the report only counts them
TAIL_WAIT: Final = 2.0  # seconds an unterminated last line is given to be finished


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    where: str  # "000001.jsonl:3", "manifest/000002.jsonl" or "blobs/sha256/ab/<hex>"
    detail: str


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
    problems: list[Problem] = field(default_factory=list)
    problems_omitted: int = 0
    warnings: list[Problem] = field(default_factory=list)


def verify_archive(
    root: Path, *, sample_pct: float = 100.0, rng_seed: int | None = None
) -> VerifyReport:
    """Check the chain, every line, and all blobs (or `sample_pct` percent of them)."""
    if not 0.0 <= sample_pct <= 100.0:
        raise ValueError(f"sample_pct must be within 0..100, not {sample_pct}")
    return _Verifier(root, sample_pct, rng_seed).run()


class _Verifier:
    def __init__(self, root: Path, sample_pct: float, rng_seed: int | None) -> None:
        self.root = root
        self.real_root = root.resolve()
        self.report = VerifyReport(root=str(root), sample_pct=sample_pct)
        self.rng = random.Random(rng_seed)  # noqa: S311 - picks a sample, guards nothing
        self.seq, self.head = 0, ZERO_HASH
        # "" is a private temporary on-disk database, deleted on close: the set of referenced
        # blobs can outgrow memory.
        self.refs = sqlite3.connect("")
        self.refs.execute("CREATE TABLE refs (sha256 TEXT PRIMARY KEY) WITHOUT ROWID")

    def problem(self, kind: str, where: str, detail: str) -> None:
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(Problem(kind, where, detail))
        else:
            self.report.problems_omitted += 1

    def warning(self, kind: str, where: str, detail: str) -> None:
        if len(self.report.warnings) < MAX_PROBLEMS:
            self.report.warnings.append(Problem(kind, where, detail))

    def run(self) -> VerifyReport:
        try:
            directory = self.root / MANIFEST_DIR
            if not directory.is_dir():
                self.problem("manifest_missing", f"{MANIFEST_DIR}/", "no manifest folder")
            else:
                segments = self.segments(directory)
                for i, (n, path) in enumerate(segments):
                    self.segment(n, path, last=i == len(segments) - 1)
            self.orphans()
        finally:
            self.refs.close()
        self.report.last_seq, self.report.head = self.seq, self.head
        self.report.ok = not self.report.problems and not self.report.problems_omitted
        return self.report

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
        with path.open("rb") as stream:
            for lineno, raw in enumerate(stream, 1):
                if last and not raw.endswith(b"\n"):
                    # The end of the file as verify found it; lines written after are not
                    # its business (the stream would read on into them).
                    self.line(_finished_line(path, offset, raw), f"{name}:{lineno}")
                    break
                self.line(raw, f"{name}:{lineno}")
                offset += len(raw)
        if lineno == 0:
            detail = "segment is empty"
            if last:  # a crash right after rotation leaves one; the writer appends to it
                self.warning("empty_segment", f"{MANIFEST_DIR}/{name}", detail)
            else:
                self.problem("empty_segment", f"{MANIFEST_DIR}/{name}", detail)

    def line(self, raw: bytes, where: str) -> None:
        self.report.lines += 1
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if body is raw:
            self.problem("unterminated_line", where, "no newline at the end (a torn write?)")
        expected, self.head, prev = self.seq + 1, line_hash(body), self.head
        self.seq = expected
        try:
            obj = parse_line(body)
        except ValueError as exc:
            self.problem("invalid_json", where, f"not a JSON object: {exc}")
            return
        if canonical(obj) != body:
            self.problem("not_canonical", where, "bytes differ from the canonical JSON encoding")
        link = link_problem(obj, expected, prev)
        if link is not None:
            self.problem("chain_broken", where, link)
            if isinstance(obj.get("seq"), int):
                self.seq = obj["seq"]  # follow the chain on from what is there
        problems = line_problems(obj)
        for detail in problems:
            self.problem("bad_entry", where, detail)
        self.count(obj, where, problems)

    def count(self, obj: dict[str, Any], where: str, problems: list[str]) -> None:
        kind = obj.get("kind")
        if kind == "message":
            self.report.messages += 1
        elif kind == "attachment_failed":
            self.report.attachments_failed += 1
        elif kind == "event":
            self.report.events += 1
        elif kind == "attachment":
            self.report.attachments += 1
            if not problems:
                self.blob(obj, where)

    def blob(self, obj: dict[str, Any], where: str) -> None:
        sha, rel = obj["sha256"], blob_relpath(obj["sha256"])
        if obj["blob"] != rel:
            self.problem("blob_path", where, f"blob {obj['blob']!r} should be {rel}")
        if self.refs.execute("INSERT OR IGNORE INTO refs VALUES (?)", (sha,)).rowcount == 0:
            return  # the same content again: checked already
        path = self.root / rel
        try:
            info = path.lstat()
        except FileNotFoundError:
            self.problem("blob_missing", where, f"{rel} does not exist")
            return
        if not stat.S_ISREG(info.st_mode) or not path.resolve().is_relative_to(self.real_root):
            self.problem("blob_not_file", rel, "not a regular file inside the archive root")
            return
        size = obj.get("size")
        if isinstance(size, int) and size != info.st_size:
            self.warning("blob_size", rel, f"{info.st_size} bytes, line {where} says {size}")
        if self.rng.random() * 100.0 < self.report.sample_pct:
            self.report.blobs_checked += 1
            with path.open("rb") as stream:
                actual = hashlib.file_digest(stream, "sha256").hexdigest()
            if actual != sha:
                self.problem("blob_hash_mismatch", rel, f"content hashes to {actual} ({where})")

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


def render_report(report: VerifyReport) -> str:
    """A human summary: the verdict first, then counts, then each problem and warning."""
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    out = [
        f"archive {report.root}: {verdict}",
        f"  segments {report.segments}, lines {report.lines}, last seq {report.last_seq}",
        f"  head {report.head}",
        f"  messages {report.messages}, attachments {report.attachments}, "
        f"failed attachments {report.attachments_failed}, events {report.events}",
        f"  blobs re-hashed {report.blobs_checked} (sample {report.sample_pct:g}%)",
    ]
    for title, items in (("problems", report.problems), ("warnings", report.warnings)):
        if items:
            out.append(f"{title} ({len(items)}):")
            out.extend(f"  {p.where}  {p.kind}: {p.detail}" for p in items)
    if report.problems_omitted:
        out.append(f"  ... and {report.problems_omitted} more problems")
    return "\n".join(out)


def report_to_json(report: VerifyReport) -> dict[str, Any]:
    return dataclasses.asdict(report)
