"""`status`: per-session progress, pending and failed downloads, budget use — read-only.

Reads `state.sqlite3` through a read-only connection, so it works while the daemon runs (WAL
lets readers in beside the writer) and can never change the archive.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archiver.config import Config
from archiver.errors import ArchiverError
from archiver.replica.replicator import META_SNAPSHOT
from archiver.store.checkpoint import newest_checkpoint

META_BUDGET = "budget_snapshot"
SESSIONS_SHOWN = 20


@dataclass
class SessionRow:
    session_id: str
    session_type: str | None
    backfilled: bool  # the start of history confirmed by an empty page
    gone: bool
    last_message_time: str | None  # as the session list gave it
    last_sync_at: str | None
    recovering: bool  # a gap fill after 7035/300 is under way
    complete_through: str | None = None  # newest message time the sync windows reached
    synced: bool = False  # the sync windows reached the listed time
    backfill: str = "walking"  # confirmed start / walking / probable start / failed
    failure: str | None = None  # the last failure's reason, until a step succeeds

    @property
    def complete(self) -> bool:
        return self.gone or (self.synced and self.backfilled and not self.recovering)


@dataclass
class StatusReport:
    root: str
    manifest_seq: int
    sessions_total: int = 0
    sessions_backfilled: int = 0
    sessions_gone: int = 0
    sessions_incomplete: int = 0
    sessions: list[SessionRow] = field(default_factory=list)
    downloads: dict[str, int] = field(default_factory=dict)
    failed_downloads: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    discovery_watermark: str | None = None
    replica_snapshot: dict[str, Any] = field(default_factory=dict, repr=False)
    # Signed checkpoints: whether a key is configured, and the newest note in ROOT (unverified:
    # `verify --trust` checks it).
    signing_key: bool = False
    checkpoint_seq: int | None = None
    checkpoint_time: str | None = None
    # [replica] on: bucket, prefix, max_lag, and the replicator's last snapshot (the figures
    # of /metrics: replicated_seq, lines/bytes behind, lag_seconds, uploads, failures, ...).
    replica: dict[str, Any] | None = None


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
        report = _collect(conn, root)
    except sqlite3.Error as exc:
        raise ArchiverError(f"cannot read {path}: {exc}") from None
    finally:
        conn.close()
    report.signing_key = bool(config.archive.signing_key_file) or _credential("signing_key")
    if config.replica.enabled:
        report.replica = {
            "bucket": config.replica.bucket,
            "prefix": config.replica.prefix,
            "max_lag": config.replica.max_lag,
            **report.replica_snapshot,
        }
    newest = newest_checkpoint(root)
    if newest is not None:
        report.checkpoint_seq, report.checkpoint_time = newest.seq, newest.time
    return report


def _credential(name: str) -> bool:
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return credentials is not None and (Path(credentials) / name).exists()


def _collect(conn: sqlite3.Connection, root: Path) -> StatusReport:
    seq_row = conn.execute("SELECT seq FROM manifest_index WHERE id = 1").fetchone()
    report = StatusReport(root=str(root), manifest_seq=int(seq_row[0]) if seq_row else 0)
    per_session = _session_meta(conn)
    for row in conn.execute(
        "SELECT session_id, session_type, backfill_done, gone, last_message_time, last_sync_at, "
        "synced_message_time FROM sessions ORDER BY backfill_done, last_message_time DESC"
    ):
        sid = row[0]
        own = per_session.get(sid, {})
        listed, synced_time = row[4], row[6]
        session = SessionRow(
            session_id=sid,
            session_type=row[1],
            backfilled=bool(row[2]),
            gone=bool(row[3]),
            last_message_time=listed,
            last_sync_at=row[5],
            recovering=bool(own.get("gap")),
            complete_through=own.get("hwm") or None,
            synced=synced_time is not None and (listed or "") <= synced_time,
            backfill=_backfill_state(bool(row[2]), own),
            failure=own.get("failed") or None,
        )
        report.sessions_total += 1
        report.sessions_backfilled += session.backfilled
        report.sessions_gone += session.gone
        report.sessions_incomplete += not session.complete
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
            "SELECT key, value FROM meta WHERE key IN (?, ?, ?)",
            (META_BUDGET, "discovery_watermark", META_SNAPSHOT),
        ).fetchall()
    )
    if meta.get(META_BUDGET):
        report.budget = json.loads(meta[META_BUDGET])
    if meta.get(META_SNAPSHOT):
        report.replica_snapshot = json.loads(meta[META_SNAPSHOT])
    report.discovery_watermark = meta.get("discovery_watermark")
    return report


def _session_meta(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """session id -> {"gap", "hwm", "walk", "failed": value} from the per-session meta keys."""
    found: dict[str, dict[str, str]] = {}
    for key, value in conn.execute(
        "SELECT key, value FROM meta WHERE key LIKE 'gap:%' OR key LIKE 'hwm:%' "
        "OR key LIKE 'walk:%' OR key LIKE 'failed:%'"
    ):
        kind, _, sid = str(key).partition(":")
        found.setdefault(sid, {})[kind] = str(value)
    return found


def _backfill_state(confirmed: bool, meta: dict[str, str]) -> str:
    if confirmed:
        return "confirmed start"
    try:
        phase = json.loads(meta.get("walk") or "{}").get("phase", "walking")
    except (ValueError, AttributeError):
        phase = "walking"
    if meta.get("failed"):
        return f"failed: {meta['failed']}"
    return {"probable_start": "probably at the start (confirming)"}.get(phase, "walking")


def _checkpoint_line(report: StatusReport) -> str:
    newest = (
        f"newest seq {report.checkpoint_seq} at {report.checkpoint_time}"
        if report.checkpoint_seq is not None
        else "none written yet"
    )
    if not report.signing_key:
        return (
            "checkpoints: no signing key configured (archive.signing_key_file): the chain head "
            f"is not signed; {newest}"
        )
    return f"checkpoints: signing key configured; {newest}"


def _replica_lines(report: StatusReport) -> list[str]:
    r = report.replica
    if r is None:
        return []
    where = f"replica: s3://{r['bucket']}/{r['prefix']}"
    if "at" not in r:
        return [f"{where}: nothing reported yet (the daemon has not run with [replica] on)"]
    lag = float(r.get("lag_seconds") or 0.0)
    lines = [
        f"{where} holds the manifest through seq {r.get('replicated_seq', 0)}; "
        f"{r.get('lines_behind', 0)} lines / {r.get('bytes_behind', 0)} bytes behind"
        + (f", the oldest unreplicated line {lag:.0f} s old" if lag else "")
        + f" (as last reported by the daemon, {_ago(r['at'])})"
    ]
    uploads = r.get("uploads") or {}
    failures = ", ".join(f"{n} {why}" for why, n in sorted((r.get("failures") or {}).items()))
    success = r.get("last_success")
    lines.append(
        f"  uploads: {uploads.get('chunk', 0)} chunks, {uploads.get('blob', 0)} blobs, "
        f"{uploads.get('checkpoint', 0)} checkpoints; failures: {failures or 'none'}; "
        f"last success: {_ago(success) if success else 'never'}"
    )
    if r.get("stopped"):
        lines.append(f"  replication STOPPED: {r['stopped']}")
    elif lag > 5 * float(r["max_lag"]):
        lines.append(f"  degraded: more than 5 x max_lag ({r['max_lag']} s) behind")
    return lines


def _ago(at: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return f"{stamp}, {max(0.0, time.time() - at):.0f} s ago"


def report_json(report: StatusReport) -> str:
    data = asdict(report)
    data.pop("replica_snapshot", None)
    for row, session in zip(data["sessions"], report.sessions, strict=True):
        row["complete"] = session.complete
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def render(report: StatusReport) -> str:
    lines = [
        f"archive: {report.root} (manifest seq {report.manifest_seq})",
        f"sessions: {report.sessions_total} known, {report.sessions_backfilled} backfilled, "
        f"{report.sessions_gone} gone upstream, {report.sessions_incomplete} incomplete",
        f"discovery watermark: {report.discovery_watermark or 'initial walk not finished'}",
        f"downloads: {report.downloads.get('done', 0)} done, "
        f"{report.downloads.get('pending', 0)} pending, {report.downloads.get('failed', 0)} failed",
        _checkpoint_line(report),
        *_replica_lines(report),
    ]
    unfinished = [s for s in report.sessions if not s.complete]
    if unfinished:
        lines.append(f"incomplete sessions ({len(unfinished)}):")
        for s in unfinished[:SESSIONS_SHOWN]:
            sync = "synced" if s.synced else f"listed {s.last_message_time or '-'}"
            backfill = "recovering a gap" if s.recovering else s.backfill
            lines.append(
                f"  {s.session_id}  complete through {s.complete_through or '-'} ({sync}); "
                f"backfill: {backfill}"
                + (f"; last failure: {s.failure}" if s.failure and s.backfilled else "")
            )
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
