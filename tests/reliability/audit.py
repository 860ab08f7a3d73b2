"""Judging an archive against the simulator's ground truth: lost, duplicated, corrupt.

Two checks, shared by the tests and the `bench` scripts:
- `crash_audit`: what must hold at *every* instant, even right after a SIGKILL and before the
  restart repairs the torn tail (DESIGN.md invariants 1 to 4): whole lines are never rewritten
  (the earlier snapshot is a prefix), no message or attachment line twice, every attachment line's
  blob present with its hash, and every sync token the state holds covers only messages that
  are in the manifest (a token saved before its page was durable shows up here at once).
- `final_audit`: after a clean `run --once`: all of the above, plus `verify` passes, every
  message of the truth archived with its latest content, every attachment of an archived
  message archived with the truth's hash, `tmp/` empty.

Counts rather than asserts, so a long run can report a table; `Audit.problems` says what.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiver.store.layout import blob_relpath
from archiver.store.verify import verify_archive
from archiver.zoom.models import decode_sync_token, parse_time


@dataclass
class Manifest:
    """The whole lines of a manifest, parsed, and their bytes (a torn tail left out)."""

    lines: list[dict[str, Any]]
    data: bytes  # every whole line, newline included, segments joined
    torn: int  # bytes of an unterminated or unparseable last line


def read_manifest(root: Path) -> Manifest:
    segments = sorted((root / "manifest").glob("*.jsonl"))
    lines: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    torn = 0
    for index, path in enumerate(segments):
        raw = path.read_bytes()
        pieces = raw.split(b"\n")
        tail = pieces.pop()  # b"" when the segment ends in a newline
        last_segment = index == len(segments) - 1
        if tail and not last_segment:
            raise AssertionError(f"{path.name}: a closed segment ends in a torn line")
        torn += len(tail)
        for number, piece in enumerate(pieces, 1):
            try:
                obj = json.loads(piece)
            except ValueError:
                # Only the very last line may be garbage (a power cut can leave zeros there);
                # the start-up repair cuts it. Anywhere else it is corruption.
                if last_segment and number == len(pieces) and not tail:
                    torn += len(piece) + 1
                    break
                raise AssertionError(f"{path.name}:{number} is not JSON") from None
            lines.append(obj)
            chunks.append(piece + b"\n")
    return Manifest(lines, b"".join(chunks), torn)


@dataclass
class Audit:
    messages_expected: int = 0
    messages_archived: int = 0
    lost_messages: int = 0
    duplicated_lines: int = 0
    attachments_expected: int = 0
    attachments_archived: int = 0
    attachments_failed: int = 0
    lost_attachments: int = 0
    corrupt: int = 0  # verify problems, wrong hashes, wrong content, rewritten lines
    token_violations: int = 0  # a saved sync token covers a message not in the manifest
    tmp_leftovers: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.lost_messages + self.lost_attachments + self.token_violations

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated_lines or self.corrupt or self.tmp_leftovers)

    def note(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)

    def summary(self) -> str:
        return (
            f"messages {self.messages_archived}/{self.messages_expected}, attachments "
            f"{self.attachments_archived}/{self.attachments_expected} "
            f"(failed {self.attachments_failed}); lost {self.lost}, duplicated "
            f"{self.duplicated_lines}, corrupt {self.corrupt}, tmp leftovers {self.tmp_leftovers}"
            + (f"; e.g. {self.problems[:5]}" if self.problems else "")
        )


@dataclass(frozen=True)
class Truth:
    messages: dict[tuple[str, str], dict[str, Any]]  # (session, message) -> record
    times: dict[str, list[tuple[int, str]]]  # session -> [(unix second, message_id)]
    attachments: dict[str, str]  # attachment id -> sha256
    deleted: frozenset[str]  # sessions deleted upstream

    @classmethod
    def of(cls, sim: Any) -> Truth:
        messages: dict[tuple[str, str], dict[str, Any]] = {}
        times: dict[str, list[tuple[int, str]]] = {}
        attachments: dict[str, str] = {}
        deleted: set[str] = set()
        for item in sim.ground_truth():
            sid = item["session_id"]
            if item.get("deleted"):
                deleted.add(sid)
            if item["kind"] == "attachment":
                attachments[item["attachment_id"]] = item["sha256"]
                continue
            mid = item["message_id"]
            messages[(sid, mid)] = item["record"]
            moment = parse_time(item["record"].get("date_time"))
            assert moment is not None, f"truth message {mid} has no date_time"
            times.setdefault(sid, []).append((int(moment.timestamp()), mid))
        return cls(messages, times, attachments, frozenset(deleted))


def crash_audit(root: Path, truth: Truth, before: bytes = b"") -> tuple[Audit, bytes]:
    """The invariants of any instant (see the module docstring); returns the audit and the
    whole-line bytes to pass as `before` next time."""
    audit = Audit()
    manifest = read_manifest(root)
    if not manifest.data.startswith(before):
        audit.corrupt += 1
        audit.note("lines written earlier changed or vanished")
    _lines_once(manifest.lines, audit)
    _blobs_present(root, manifest.lines, audit)
    _tokens_covered(root, manifest.lines, truth, audit)
    return audit, manifest.data


def final_audit(root: Path, truth: Truth, before: bytes = b"") -> Audit:
    """Everything `crash_audit` checks, plus completeness against the truth and `verify`."""
    audit, _ = crash_audit(root, truth, before)
    report = verify_archive(root)
    audit.corrupt += len(report.problems) + report.problems_omitted
    for problem in report.problems[:5]:
        audit.note(f"verify: {problem.where} {problem.kind}: {problem.detail}")
    manifest = read_manifest(root)
    if manifest.torn:
        audit.corrupt += 1
        audit.note(f"manifest ends in {manifest.torn} torn bytes after a clean run")
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    finished: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in manifest.lines:
        if line["kind"] == "message":
            latest[(line["session_id"], line["message_id"])] = line["record"]
        elif line["kind"] in ("attachment", "attachment_failed"):
            finished[(line["session_id"], line["message_id"], line["attachment_id"])] = line
    audit.messages_archived = len(latest)
    for key, record in truth.messages.items():
        if key[0] in truth.deleted:
            continue
        audit.messages_expected += 1
        if key not in latest:
            audit.lost_messages += 1
            audit.note(f"message {key} missing")
        elif latest[key] != record:
            audit.corrupt += 1
            audit.note(f"message {key} archived with other content")
    for (sid, mid), record in latest.items():
        ids = dict.fromkeys(a["id"] for a in record.get("attachments") or [])
        for aid in ids:
            if sid in truth.deleted:
                continue
            audit.attachments_expected += 1
            end = finished.get((sid, mid, aid))
            if end is None:
                audit.lost_attachments += 1
                audit.note(f"attachment {(sid, mid, aid)} has no line")
            elif end["kind"] == "attachment_failed":
                audit.attachments_failed += 1
            elif end["sha256"] != truth.attachments.get(aid):
                audit.corrupt += 1
                audit.note(f"attachment {aid} archived with hash {end['sha256']}")
            else:
                audit.attachments_archived += 1
    leftovers = list((root / "tmp").iterdir()) if (root / "tmp").is_dir() else []
    audit.tmp_leftovers = len(leftovers)
    if leftovers:
        audit.note(f"tmp/ holds {[p.name for p in leftovers[:3]]}")
    return audit


def _lines_once(lines: list[dict[str, Any]], audit: Audit) -> None:
    keys: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        if line["kind"] == "message":
            keys[("m", line["session_id"], line["message_id"], line["digest"])] += 1
        elif line["kind"] in ("attachment", "attachment_failed"):
            keys[("a", line["session_id"], line["message_id"], line["attachment_id"])] += 1
    for key, n in keys.items():
        if n > 1:
            audit.duplicated_lines += n - 1
            audit.note(f"{n} lines for {key}")


def _blobs_present(root: Path, lines: list[dict[str, Any]], audit: Audit) -> None:
    seen: set[str] = set()
    for line in lines:
        if line["kind"] != "attachment" or line["sha256"] in seen:
            continue
        seen.add(line["sha256"])
        path = root / blob_relpath(line["sha256"])
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            audit.lost_attachments += 1
            audit.note(f"blob {line['sha256'][:12]} missing though its line is written")
            continue
        if actual != line["sha256"]:
            audit.corrupt += 1
            audit.note(f"blob {line['sha256'][:12]} holds other bytes")


def _tokens_covered(root: Path, lines: list[dict[str, Any]], truth: Truth, audit: Audit) -> None:
    """Invariant 4, checked from the outside: the simulator's sync token is the window of
    message times the client has been given, so every message inside the window of a token
    the state saved must already be in the manifest."""
    path = root / "state.sqlite3"
    if not path.exists():
        return
    archived = {
        (line["session_id"], line["message_id"]) for line in lines if line["kind"] == "message"
    }
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT session_id, newest_token, oldest_token FROM sessions"
        ).fetchall()
        gaps = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'gap:%'").fetchall()
    except sqlite3.OperationalError:
        return  # a state file from before the schema existed: nothing saved yet
    finally:
        conn.close()
    tokens = [(sid, token) for sid, *pair in rows for token in pair if token]
    for key, value in gaps:
        cursor = json.loads(value).get("cursor") if value else None
        if cursor:  # a gap walk before its first page holds no cursor yet
            tokens.append((key.removeprefix("gap:"), cursor))
    for sid, token in tokens:
        window = decode_sync_token(token)
        if window is None or sid in truth.deleted:
            continue
        # Times are whole seconds in the record: only messages certainly inside count.
        low, high = -(-window.older_ms // 1000), (window.newer_ms - 999) // 1000
        for second, mid in truth.times.get(sid, []):
            if low <= second <= high and (sid, mid) not in archived:
                audit.token_violations += 1
                audit.note(f"token of {sid[:8]} covers {mid} which is not archived")
