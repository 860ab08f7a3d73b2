"""The export itself: check the chain, index, then stream the outputs and export.json.

Two passes over the manifest, memory flat in both:
1. every line in order, chain checked, one index row per message/attachment line (SQLite);
2. the selected lines, read back by position in session and time order, each rendered into the
   session page and the CSV as it is read; then the JSONL in seq order.
export.json is written last: a folder without it is an export that did not finish.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any, Final

from archiver import __version__
from archiver.export import html
from archiver.export.csvout import CsvOut
from archiver.export.files import OutDir, OutputFile, copy_blob, session_file
from archiver.export.filters import ExportFilter, ExportUsageError, as_list
from archiver.export.index import ExportIndex, PageRow, Selected
from archiver.export.reader import LineReader, ManifestScan
from archiver.export.text import shorten
from archiver.export.view import MessageView, Person, message_view

EXPORT_FORMAT: Final = 1
CSV_FILE: Final = "messages.csv"
JSONL_FILE: Final = "messages.jsonl"
INDEX_FILE: Final = "index.html"
MANIFEST_FILE: Final = "export.json"
_DATA_FILES: Final = (("csv", CSV_FILE), ("jsonl", JSONL_FILE))
_PEOPLE_KEPT: Final = 200  # per session page: bounds memory for a pathological group


@dataclass(frozen=True, slots=True)
class ExportResult:
    counts: dict[str, int]
    problems: list[str]  # the first PROBLEMS_KEPT; `counts["problems"]` has the total
    last_seq: int
    head: str


def export_archive(
    root: Path, out: Path, flt: ExportFilter, *, now: datetime | None = None
) -> ExportResult:
    """Export what `flt` selects from the archive at `root` into the new folder `out`.

    Raises ExportUsageError before anything is written when root or out cannot be used, and
    ManifestCorruptError (ChainBroken) when the chain does not hold.
    """
    created = _prepare_out(root, out)
    outdir = OutDir(out)
    try:
        try:
            index = _open_index(outdir)
        except ExportUsageError:
            if created:
                os.rmdir(out)
            raise
        try:
            scan = ManifestScan(root)
            try:
                index.load(scan, flt)
            except BaseException:
                index.close()
                if created:
                    os.rmdir(out)  # nothing was written yet: leave no trace of a refused export
                raise
            index.select(flt.all_versions)
            prod = html.Production(
                tool=f"zoom-sms-archiver {__version__}",
                created_at=(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                last_seq=scan.last_seq,
                head=scan.head,
                filter_text=_describe(flt),
            )
            with LineReader(root) as reader:
                return _Export(
                    root=root, out=outdir, flt=flt, index=index, reader=reader, prod=prod
                ).run(scan)
        finally:
            index.close()
    finally:
        outdir.close()


def _open_index(outdir: OutDir) -> ExportIndex:
    """The scratch index, its file made by SQLite in --out through the folder's descriptor."""
    try:
        return ExportIndex(outdir.through_descriptor())
    except sqlite3.OperationalError as exc:
        raise ExportUsageError(
            f"--out {outdir.path}: the export's index cannot be made there through the "
            f"folder's descriptor ({exc}); the export needs /proc mounted"
        ) from exc


def _prepare_out(root: Path, out: Path) -> bool:
    """Check the archive and the target folder; True when the folder was created here."""
    if not (root / "manifest").is_dir():
        raise ExportUsageError(f"{root} is not an archive (no manifest/ folder)")
    real_root, real_out = root.resolve(), out.resolve()
    if real_out.is_relative_to(real_root) or real_root.is_relative_to(real_out):
        raise ExportUsageError(f"--out {out} must be outside the archive {root}")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise ExportUsageError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()):
            raise ExportUsageError(f"--out {out} is not empty; exports never overwrite")
        return False
    try:
        # Private: an export holds the same personal data as the archive it came from.
        out.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise ExportUsageError(f"--out {out} cannot be created: {exc.strerror}") from exc
    return True


def _describe(flt: ExportFilter) -> str:
    parts = [f"session {s}" for s in flt.sessions] + [f"phone {p}" for p in flt.phones]
    data = flt.to_json()
    parts += [f"{key} {data[key]}" for key in ("from", "to", "direction") if data[key]]
    parts.append("all versions" if flt.all_versions else "latest versions")
    return ", ".join(parts)


class _Export:
    """Pass 2: everything the index selected, written out. One instance per export."""

    def __init__(
        self,
        *,
        root: Path,
        out: OutDir,
        flt: ExportFilter,
        index: ExportIndex,
        reader: LineReader,
        prod: html.Production,
    ) -> None:
        self.root, self.out, self.flt = root, out, flt
        self.index, self.reader, self.prod = index, reader, prod
        self.copied = 0

    def run(self, scan: ManifestScan) -> ExportResult:
        counts = self.index.counts()
        if "html" in self.flt.formats or "csv" in self.flt.formats:
            self.sessions()
            counts["attachments_copied"] = self.copied
        if "jsonl" in self.flt.formats:
            counts["jsonl_lines"] = self.jsonl()
        if "html" in self.flt.formats:
            self.index_page(counts["sessions"])
        counts["problems"] = self.index.problems
        problems = list(self.index.problem_texts())
        self.write_manifest(scan, counts, problems)
        return ExportResult(counts, problems, scan.last_seq, scan.head)

    def sessions(self) -> None:
        """Session pages and the CSV in one pass, in session, time, message, version order."""
        want_html = "html" in self.flt.formats
        csv_file = OutputFile(self.out, CSV_FILE, self.index) if "csv" in self.flt.formats else None
        table = CsvOut(csv_file, bom=self.flt.csv_bom) if csv_file else None
        for session_id, lines in groupby(self.index.in_order(), key=_session_of):
            page = _Page(self.out, session_id, self.index, self.prod) if want_html else None
            for selected in lines:
                view = _view(self.reader, self.index, selected)
                if page:
                    view = self.copy_attachments(view)
                    page.add(view)
                if table:
                    table.add(view)
            if page:
                page.close()
        if csv_file:
            csv_file.close()

    def copy_attachments(self, view: MessageView) -> MessageView:
        """Copy each archived attachment next to the pages; a copy that fails shows as missing."""
        if not view.attachments:
            return view
        shown = []
        for att in view.attachments:
            if att.status != "archived":
                shown.append(att)
                continue
            known = self.index.is_written(att.file)
            problem = copy_blob(self.root, att.sha256, self.out, att.file, self.index)
            if problem:
                self.index.problem(f"seq {view.seq}: {problem}")
                shown.append(dataclasses.replace(att, status="missing", reason=problem, file=""))
            else:
                self.copied += not known
                shown.append(att)
        return dataclasses.replace(view, attachments=tuple(shown))

    def jsonl(self) -> int:
        """The selected lines and their attachment lines, byte for byte as in the manifest."""
        lines = 0
        with OutputFile(self.out, JSONL_FILE, self.index) as sink:
            for seg, off, length, sha in self.index.jsonl_positions():
                sink.write_bytes(self.reader.read(seg, off, length, sha) + b"\n")
                lines += 1
        return lines

    def index_page(self, sessions: int) -> None:
        outputs = [name for fmt, name in _DATA_FILES if fmt in self.flt.formats]
        with OutputFile(self.out, INDEX_FILE, self.index) as sink:
            sink.write(html.index_start(self.prod, [*outputs, MANIFEST_FILE]))
            for page in self.index.pages():
                sink.write(html.index_row(page))
            sink.write(html.index_end(sessions))

    def write_manifest(
        self, scan: ManifestScan, counts: dict[str, int], problems: list[str]
    ) -> None:
        """export.json, streamed: the file list can be as long as the archive has attachments.

        ASCII-only JSON (`ensure_ascii`): a root path or problem text with odd bytes stays valid.
        """
        head = {
            "export_format": EXPORT_FORMAT,
            "tool": self.prod.tool,
            "created_at": self.prod.created_at,
            "archive": {
                "root": os.fspath(self.root.resolve()),
                "last_seq": scan.last_seq,
                "chain_head": scan.head,
                "segments": scan.segments,
                "unfinished_tail": scan.unfinished_tail,
            },
            "filter": self.flt.to_json(),
            "counts": counts,
            "problems": problems,
        }
        text = json.dumps(head, indent=2, sort_keys=True)
        partial = MANIFEST_FILE + ".part"
        with io.TextIOWrapper(self.out.create(partial), encoding="ascii") as sink:
            sink.write(text[: text.rindex("}")].rstrip() + ',\n  "files": [')
            for n, (path, sha256, size) in enumerate(self.index.written()):
                entry = json.dumps({"path": path, "sha256": sha256, "size": size}, sort_keys=True)
                sink.write(("\n    " if n == 0 else ",\n    ") + entry)
            sink.write("\n  ]\n}\n")
            sink.flush()
            os.fsync(sink.fileno())
        self.out.rename(partial, MANIFEST_FILE)  # appears whole or not at all: marks completion


def _session_of(selected: Selected) -> str:
    return selected.session_id


def _view(reader: LineReader, index: ExportIndex, selected: Selected) -> MessageView:
    obj: dict[str, Any] = json.loads(
        reader.read(selected.seg, selected.off, selected.length, selected.sha)
    )
    record = obj.get("record")
    has_attachments = isinstance(record, dict) and as_list(record.get("attachments"))
    states = (
        index.attachments(selected.session_id, str(obj.get("message_id")))
        if has_attachments
        else {}
    )
    return message_view(selected, obj, states)


class _Page:
    """One session's page, streamed: header, then each message as it is read, then people."""

    def __init__(
        self, out: OutDir, session_id: str, index: ExportIndex, prod: html.Production
    ) -> None:
        self.session_id = session_id
        self.file = session_file(session_id)
        self.index = index
        self.messages, self.first, self.last = index.session_summary(session_id)
        self.sink = OutputFile(out, self.file, index)
        self.sink.write(html.session_start(session_id, self.messages, self.first, self.last, prod))
        self.people: dict[Person, None] = {}  # ordered set: first seen, first listed

    def add(self, view: MessageView) -> None:
        for person in (view.sender, *view.recipients):
            if len(self.people) < _PEOPLE_KEPT:
                self.people.setdefault(person, None)
        self.sink.write(html.message(view))

    def close(self) -> None:
        self.sink.write(html.session_end(self.people))
        self.sink.close()
        people = "; ".join(p.label() for p in self.people)
        self.index.add_page(
            PageRow(
                self.session_id,
                self.file,
                self.messages,
                self.first,
                self.last,
                shorten(people, 300),
            )
        )
