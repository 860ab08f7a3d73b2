"""`status`: per-session progress, pending and failed downloads, budget use — read-only.

Reads `state.sqlite3` through a read-only connection, so it works while the daemon runs (WAL
lets readers in beside the writer) and can never change the archive.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archiver.config import Config
from archiver.errors import ArchiverError

META_BUDGET = "budget_snapshot"
SESSIONS_SHOWN = 20


@dataclass
class SessionRow:
    session_id: str
    session_type: str | None
    backfilled: bool
    gone: bool
    last_message_time: str | None
    last_sync_at: str | None
    recovering: bool


@dataclass
class StatusReport:
    root: str
    manifest_seq: int
    sessions_total: int = 0
    sessions_backfilled: int = 0
    sessions_gone: int = 0
    sessions: list[SessionRow] = field(default_factory=list)
    downloads: dict[str, int] = field(default_factory=dict)
    failed_downloads: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    discovery_watermark: str | None = None


def read_status(config: Config) -> StatusReport:
    root = config.root
    path = root / "state.sqlite3"
    if not path.exists():
        raise ArchiverError(
            f"{path} does not exist: the archiver has not run on this archive root yet "
            f"(archive.root in {config.source})"
        )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise ArchiverError(f"cannot open {path} read-only: {exc}") from None
    try:
        return _collect(conn, root)
    except sqlite3.Error as exc:
        raise ArchiverError(f"cannot read {path}: {exc}") from None
    finally:
        conn.close()


def _collect(conn: sqlite3.Connection, root: Path) -> StatusReport:
    seq_row = conn.execute("SELECT seq FROM manifest_index WHERE id = 1").fetchone()
    report = StatusReport(root=str(root), manifest_seq=int(seq_row[0]) if seq_row else 0)
    gaps = {
        key.removeprefix("gap:")
        for (key, value) in conn.execute("SELECT key, value FROM meta WHERE key LIKE 'gap:%'")
        if value
    }
    for row in conn.execute(
        "SELECT session_id, session_type, backfill_done, gone, last_message_time, last_sync_at "
        "FROM sessions ORDER BY backfill_done, last_message_time DESC"
    ):
        session = SessionRow(
            session_id=row[0],
            session_type=row[1],
            backfilled=bool(row[2]),
            gone=bool(row[3]),
            last_message_time=row[4],
            last_sync_at=row[5],
            recovering=row[0] in gaps,
        )
        report.sessions_total += 1
        report.sessions_backfilled += session.backfilled
        report.sessions_gone += session.gone
        report.sessions.append(session)
    report.downloads = {"pending": 0, "done": 0, "failed": 0}
    for status, count in conn.execute("SELECT status, count(*) FROM attachments GROUP BY status"):
        report.downloads[str(status)] = int(count)
    for row in conn.execute(
        "SELECT session_id, message_id, attachment_id, name, attempts, last_error FROM attachments "
        "WHERE status = 'failed' ORDER BY session_id, message_id LIMIT 1000"
    ):
        report.failed_downloads.append(
            dict(
                zip(
                    ("session_id", "message_id", "attachment_id", "name", "attempts", "reason"),
                    row,
                    strict=True,
                )
            )
        )
    meta = dict(
        conn.execute(
            "SELECT key, value FROM meta WHERE key IN (?, ?)", (META_BUDGET, "discovery_watermark")
        ).fetchall()
    )
    if meta.get(META_BUDGET):
        report.budget = json.loads(meta[META_BUDGET])
    report.discovery_watermark = meta.get("discovery_watermark")
    return report


def report_json(report: StatusReport) -> str:
    return json.dumps(asdict(report), indent=2, sort_keys=True, ensure_ascii=False)


def render(report: StatusReport) -> str:
    lines = [
        f"archive: {report.root} (manifest seq {report.manifest_seq})",
        f"sessions: {report.sessions_total} known, {report.sessions_backfilled} backfilled, "
        f"{report.sessions_gone} gone upstream",
        f"discovery watermark: {report.discovery_watermark or 'initial walk not finished'}",
        f"downloads: {report.downloads.get('done', 0)} done, "
        f"{report.downloads.get('pending', 0)} pending, {report.downloads.get('failed', 0)} failed",
    ]
    unfinished = [s for s in report.sessions if not s.backfilled or s.recovering]
    if unfinished:
        lines.append(f"sessions still backfilling or recovering ({len(unfinished)}):")
        for s in unfinished[:SESSIONS_SHOWN]:
            state = "recovering" if s.recovering else "backfilling"
            lines.append(f"  {s.session_id}  {state}  last message {s.last_message_time or '-'}")
        if len(unfinished) > SESSIONS_SHOWN:
            lines.append(f"  ... and {len(unfinished) - SESSIONS_SHOWN} more (--json lists all)")
    if report.failed_downloads:
        lines.append("failed downloads:")
        for f in report.failed_downloads[:SESSIONS_SHOWN]:
            lines.append(
                f"  {f['session_id']}/{f['message_id']}/{f['attachment_id']}: {f['reason']}"
            )
    if report.budget:
        lines.append("budget (as last reported by the daemon):")
        for label, values in sorted(report.budget.get("labels", {}).items()):
            rate = values.get("configured_rate")
            lines.append(
                f"  {label:<7} {values.get('requests', 0)} requests, "
                f"{values.get('rate_limited', 0)} x 429, "
                f"{'unlimited' if rate is None else f'{rate:g}/s allowed'}"
                + (f", {values['daily_used']} today" if values.get("daily_used") else "")
            )
    return "\n".join(lines)
