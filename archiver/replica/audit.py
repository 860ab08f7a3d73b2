"""`replica verify`: check the bucket alone, every rule the replica promises.

- The chunks chain: ordered by (segment, first seq), their lines are seq 1, 2, 3 ... with no
  gap, each `prev` the hash of the line before (across objects), each line as
  `verify` wants it (`archiver.store.manifest`: one implementation of "a line chains"); a
  chunk holds exactly the seqs its key names.
- Every blob an attachment line names is there with the line's size (always) and hash (for
  `sample_pct` percent of them).
- Every object carries the configured lock mode, retained at least `retention_days` after
  its last line's `at` (chunks), the latest `at` of the lines that name it (blobs: a blob
  named again later is kept for the later line too), or its upload (checkpoints); no key has
  a delete marker or a second version.
- With `trust`, every checkpoint in the bucket verifies and its head is the chain's there.
- The bucket's head is the local head or a prefix of it (the lag), when ROOT is here (and
  `local`: `restore` audits the bucket alone).

With `oldest`, each key's oldest version is the one read (the WORM original, for `restore
--oldest-versions`); by default its latest (what a plain GET returns). Either way a second
version or a delete marker is a problem.

Also the bucket plumbing the three commands share: `connect` (the start-up check, an
unreachable endpoint turned into an exit-2 error naming the fix) and `Bar` (rich on a TTY,
plain lines otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archiver.config import Config, read_s3_secret
from archiver.errors import ConfigError
from archiver.replica.bucket import (
    BlobKey,
    CheckpointKey,
    ChunkKey,
    ReplicaBucketError,
    blob_key,
    check_bucket,
    describe,
    is_transient,
    open_client,
    parse_key,
    status_of,
)
from archiver.store import checkpoint
from archiver.store.layout import list_segments, manifest_dir
from archiver.store.manifest import (
    ZERO_HASH,
    canonical,
    is_hex_digest,
    line_hash,
    line_problems,
    link_problem,
    parse_line,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

MAX_PROBLEMS: Final = 1000
CHECK_TIMEOUT: Final = 30.0  # the commands' bucket check, in all: slower is "cannot reach"
READ_BYTES: Final = 1024 * 1024


# --- shared by the replica commands ----------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(config: Config, *, locked: bool = True) -> AsyncIterator[S3Client]:
    """The bucket's client after the start-up check (`locked=False`: only that the bucket is
    there and takes our credentials, for reading it). ReplicaBucketError (exit 2) names the
    fix for a refused credential, a missing bucket, a bucket without Object Lock, or an
    endpoint that does not answer."""
    replica = config.replica
    if not replica.enabled:
        raise ConfigError(
            "is false: the replica commands read the bucket [replica] names; set "
            "replica.enabled = true with its bucket and credentials",
            file=config.source,
            key="replica.enabled",
        )
    secret = read_s3_secret(config)
    check = replica if locked else dataclasses.replace(replica, lock_mode="none")
    async with open_client(replica, secret) as s3:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                warnings = await check_bucket(s3, check)
            for warning in warnings:
                sys.stderr.write(f"zoom-sms-archiver: warning: {warning}\n")
        except ReplicaBucketError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise ReplicaBucketError(
                f"cannot reach the bucket at {replica.endpoint_url or 'AWS'} "
                f"({describe(exc)}): check replica.endpoint_url and the network, then run again",
                key="replica.endpoint_url",
            ) from None
        yield s3


class Bar:
    """Progress over a known total: a rich bar on a TTY (stderr), else a plain line every
    10 % (or 10 s), so a log or a pipe gets a few lines, not a bar's redraws."""

    def __init__(self, what: str, total: int, unit: str = "") -> None:
        self.what, self.total, self.unit, self.done = what, max(total, 0), unit, 0
        self._rich: Any = None
        self._task: Any = None
        self._said = (0, time.monotonic())
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                count,
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._rich.add_task(what, total=self.total)

    def __enter__(self) -> Bar:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif exc[0] is None:
            self._line()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)
            return
        tenth, at = self._said
        now_tenth = self.done * 10 // self.total if self.total else 10
        if now_tenth > tenth or time.monotonic() - at >= 10:
            self._said = (now_tenth, time.monotonic())
            if self.done < self.total:
                self._line()

    def _line(self) -> None:
        unit = f" {self.unit}" if self.unit else ""
        sys.stderr.write(f"{self.what}: {self.done}/{self.total}{unit}\n")
        sys.stderr.flush()


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    key: str  # the bucket key (`...jsonl:17` for a line), or "ROOT" for the local comparison
    detail: str


@dataclass
class AuditReport:
    bucket: str
    prefix: str
    lock_mode: str
    ok: bool = False
    objects: int = 0
    chunks: int = 0
    lines: int = 0
    last_seq: int = 0
    head: str = ZERO_HASH
    blobs_referenced: int = 0
    blobs_checked: int = 0
    sample_pct: float = 100.0
    checkpoints_seen: int = 0
    checkpoints_checked: int = 0
    local: str = "absent"  # "absent", "same" (the bucket is the local head or a prefix of it)
    local_seq: int | None = None
    lag_lines: int | None = None
    problems: list[Finding] = field(default_factory=list)
    problems_omitted: int = 0
    warnings: list[Finding] = field(default_factory=list)


async def audit_bucket(
    s3: S3Client,
    config: Config,
    *,
    sample_pct: float = 100.0,
    trust: Sequence[Ed25519PublicKey] = (),
    rng_seed: int | None = None,
    local: bool = True,
    oldest: bool = False,
) -> AuditReport:
    if not 0.0 <= sample_pct <= 100.0:
        raise ValueError(f"sample_pct must be within 0..100, not {sample_pct}")
    audit = _Audit(s3, config, sample_pct, list(trust), rng_seed)
    audit.local, audit.oldest = local, oldest
    return await audit.run()


class _Audit:
    def __init__(
        self,
        s3: S3Client,
        config: Config,
        sample_pct: float,
        trust: list[Ed25519PublicKey],
        rng_seed: int | None,
    ) -> None:
        self.s3, self.config, self.replica = s3, config, config.replica
        self.bucket, self.prefix = config.replica.bucket, config.replica.prefix
        self.trust = trust
        self.local, self.oldest = True, False
        self.rng = random.Random(rng_seed)  # noqa: S311 - picks a sample, guards nothing
        self.report = AuditReport(
            self.bucket, self.prefix, self.replica.lock_mode, sample_pct=sample_pct
        )
        # Objects and blob references on disk: a bucket can hold millions of blobs.
        self.db = sqlite3.connect("")
        self.db.executescript(
            """
            CREATE TABLE objects (key TEXT PRIMARY KEY, version TEXT, size INTEGER,
                modified TEXT, versions INTEGER, markers INTEGER) WITHOUT ROWID;
            CREATE TABLE refs (sha256 TEXT PRIMARY KEY, size INTEGER, place TEXT,
                at TEXT) WITHOUT ROWID;
            """
        )
        self.heads_wanted: dict[int, list[tuple[str, str]]] = {}
        self.seq, self.head, self.resync = 0, ZERO_HASH, False
        self.chunk_ends: list[tuple[ChunkKey, str]] = []

    def problem(self, kind: str, key: str, detail: str) -> None:
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(Finding(kind, key, detail))
        else:
            self.report.problems_omitted += 1

    def warning(self, kind: str, key: str, detail: str) -> None:
        if len(self.report.warnings) < MAX_PROBLEMS:
            self.report.warnings.append(Finding(kind, key, detail))

    async def run(self) -> AuditReport:
        try:
            await self.list_versions()
            await self.checkpoints()
            await self.chain()
            await self.blobs()
            self.heads_not_found()
            if self.local:
                self.local_head()
        finally:
            self.db.close()
        self.report.ok = not self.report.problems and not self.report.problems_omitted
        return self.report

    # --- listing ---------------------------------------------------------------------------

    async def list_versions(self) -> None:
        """Every version and delete marker under the prefix: one of our keys has one version
        and no marker; its latest version (`oldest`: its oldest) is what the rest of the audit
        reads. A listing gives a key's versions newest first, so the last one seen is the
        oldest."""
        paginator = self.s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for version in page.get("Versions", []):
                key = version.get("Key", "")
                latest = version.get("IsLatest", False) or self.oldest
                modified = version.get("LastModified")
                self.db.execute(
                    "INSERT INTO objects VALUES (?, ?, ?, ?, 1, 0) ON CONFLICT(key) DO UPDATE "
                    "SET versions = versions + 1, version = coalesce(excluded.version, version),"
                    " size = coalesce(excluded.size, size),"
                    " modified = coalesce(excluded.modified, modified)",
                    (
                        key,
                        version.get("VersionId") if latest else None,
                        version.get("Size") if latest else None,
                        modified.isoformat() if latest and modified else None,
                    ),
                )
            for marker in page.get("DeleteMarkers", []):
                self.db.execute(
                    "INSERT INTO objects VALUES (?, NULL, NULL, NULL, 0, 1) ON CONFLICT(key) "
                    "DO UPDATE SET markers = markers + 1",
                    (marker.get("Key", ""),),
                )
        chunks: list[tuple[ChunkKey, str]] = []
        for key, version, versions, markers in self.db.execute(
            "SELECT key, version, versions, markers FROM objects ORDER BY key"
        ):
            parsed = parse_key(self.prefix, key)
            if parsed is None:
                self.warning("unexpected_key", key, "not a key the replicator writes")
                continue
            self.report.objects += 1
            if markers:
                self.problem(
                    "delete_marker",
                    key,
                    f"{markers} delete marker(s): someone deleted it"
                    + (
                        "; the latest entry is a marker, so it reads as gone" if not version else ""
                    ),
                )
            if versions > 1:
                self.problem(
                    "second_version",
                    key,
                    f"{versions} versions: it was written again (a WORM key has one)",
                )
            if isinstance(parsed, ChunkKey) and version:
                chunks.append((parsed, key))
        chunks.sort(key=lambda c: (c[0].segment, c[0].first, c[0].last))
        self.chunk_ends = chunks
        self.report.chunks = len(chunks)

    def latest(self, key: str) -> tuple[str, int, datetime] | None:
        row = self.db.execute(
            "SELECT version, size, modified FROM objects WHERE key = ? AND version IS NOT NULL",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), int(row[1] or 0), datetime.fromisoformat(row[2])

    async def read(self, key: str, version: str) -> tuple[bytes, dict[str, Any]] | None:
        try:
            answer = await self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=version)
        except ClientError as exc:
            if status_of(exc) != 404:
                raise
            self.problem("object_vanished", key, "listed, then not found")
            return None
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data, dict(answer)

    # --- locks --------------------------------------------------------------------------------

    def lock(self, key: str, answer: dict[str, Any], since: datetime) -> None:
        """The object's lock against policy: the mode, and a retain-until at least
        `retention_days` after `since`."""
        mode = self.replica.lock_mode
        if mode == "none":
            return
        found, until = answer.get("ObjectLockMode"), answer.get("ObjectLockRetainUntilDate")
        if found != mode:
            self.problem("lock_mode", key, f"lock mode {found or 'none'}, not {mode}")
        wanted = since + timedelta(days=self.replica.retention_days)
        if until is None:
            self.problem("retention_short", key, "no retain-until date")
        elif until < wanted:
            self.problem(
                "retention_short",
                key,
                f"retained until {until.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}, policy wants "
                f"{wanted:%Y-%m-%dT%H:%M:%SZ} or later ({self.replica.retention_days} days)",
            )

    async def head_lock(self, key: str, version: str, since: datetime) -> None:
        if self.replica.lock_mode == "none":
            return
        try:
            head = await self.s3.head_object(Bucket=self.bucket, Key=key, VersionId=version)
        except ClientError as exc:
            if status_of(exc) != 404:
                raise
            self.problem("object_vanished", key, "listed, then not found")
            return
        self.lock(key, dict(head), since)

    # --- checkpoints ----------------------------------------------------------------------

    async def checkpoints(self) -> None:
        rows = self.db.execute(
            "SELECT key FROM objects WHERE key LIKE ? AND version IS NOT NULL ORDER BY key",
            (f"{_like(self.prefix)}checkpoints/%",),
        ).fetchall()
        for (key,) in rows:
            parsed = parse_key(self.prefix, key)
            latest = self.latest(key)
            if not isinstance(parsed, CheckpointKey) or latest is None:
                continue
            self.report.checkpoints_seen += 1
            got = await self.read(key, latest[0])
            if got is None:
                continue
            data, answer = got
            self.lock(key, answer, latest[2])
            if not self.trust:
                continue
            try:
                note = checkpoint.parse(data)
            except ValueError as exc:
                self.problem("checkpoint_invalid", key, f"not a checkpoint note: {exc}")
                continue
            refused = checkpoint.verify(note, self.trust)
            if refused is not None:
                self.problem("checkpoint_signature", key, refused)
            elif note.seq != parsed.seq:
                self.problem("checkpoint_invalid", key, f"the note is for seq {note.seq}")
            else:
                self.heads_wanted.setdefault(note.seq, []).append((key, note.head))
        if self.report.checkpoints_seen and not self.trust:
            self.warning(
                "checkpoints_not_checked",
                f"{self.prefix}checkpoints/",
                f"{self.report.checkpoints_seen} checkpoints seen, none checked: give --trust PUB",
            )

    def heads_not_found(self) -> None:
        for seq, claims in sorted(self.heads_wanted.items()):
            for key, head in claims:
                self.problem(
                    "head_missing",
                    key,
                    f"says seq {seq} hashes to {head[:16]}..., but the bucket's chain ends at "
                    f"seq {self.report.last_seq}: chunks are missing from its end",
                )

    # --- the chain ------------------------------------------------------------------------

    async def chain(self) -> None:
        segment, before = 0, "(the start)"
        for parsed, key in self.chunk_ends:
            if parsed.segment > segment + 1:
                missing = f"{segment + 1}" + (
                    f"..{parsed.segment - 1}" if parsed.segment - 1 > segment + 1 else ""
                )
                self.problem("segment_missing", key, f"no chunk of segment {missing}")
            segment = parsed.segment
            self.resync = False
            if parsed.first > self.seq + 1:
                self.problem(
                    "chunk_missing",
                    key,
                    f"seq {self.seq + 1}..{parsed.first - 1} are in no chunk (after {before})",
                )
                self.resync = True
            elif parsed.first <= self.seq:
                self.problem(
                    "chunk_overlap", key, f"starts at seq {parsed.first}, after {self.seq}"
                )
                self.resync = True
            latest = self.latest(key)
            got = await self.read(key, latest[0]) if latest else None
            if latest is None or got is None:
                continue
            data, answer = got
            recorded = answer.get("Metadata", {}).get("sha256")
            if recorded and recorded != hashlib.sha256(data).hexdigest():
                self.problem("chunk_altered", key, "its bytes do not hash to x-amz-meta-sha256")
            seqs: list[int] = []
            last_at: datetime | None = None
            for lineno, raw in enumerate(data.splitlines(keepends=True), 1):
                obj = self.line(raw, f"{key}:{lineno}")
                seqs.append(self.seq)
                if obj is not None and isinstance(obj.get("at"), str):
                    last_at = _parse_at(obj["at"]) or last_at
            if not seqs or (seqs[0], seqs[-1]) != (parsed.first, parsed.last):
                held = f"{seqs[0]}..{seqs[-1]}" if seqs else "no line"
                self.problem(
                    "chunk_range",
                    key,
                    f"holds seq {held}, its key names {parsed.first}..{parsed.last}",
                )
            self.lock(key, answer, last_at or latest[2])
            before = key
        self.report.last_seq, self.report.head = self.seq, self.head

    def line(self, raw: bytes, where: str) -> dict[str, Any] | None:
        """One line of a chunk: the same checks `verify` makes of a local line."""
        self.report.lines += 1
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if body is raw:
            self.problem("unterminated_line", where, "no newline at the end")
        expected, prev, self.head = self.seq + 1, self.head, line_hash(body)
        self.seq = expected
        try:
            obj = parse_line(body)
        except ValueError as exc:
            self.problem("invalid_json", where, str(exc))
            return None
        link = link_problem(obj, expected, prev)
        found = obj.get("seq")
        is_seq = isinstance(found, int) and not isinstance(found, bool)
        if link is not None and not (self.resync and is_seq):
            self.problem("seq_gap" if found != expected else "chain_broken", where, link)
        if isinstance(found, int) and not isinstance(found, bool):
            self.seq = found  # follow the chain on from what is there
        self.resync = False
        if canonical(obj) != body:
            self.problem("not_canonical", where, "bytes differ from canonical JSON")
        for detail in line_problems(obj):
            self.problem("bad_entry", where, detail)
        for source, claimed in self.heads_wanted.pop(self.seq, []):
            if claimed != self.head:
                self.problem(
                    "head_mismatch",
                    source,
                    f"says seq {self.seq} hashes to {claimed[:16]}..., the bucket's line there "
                    f"({where}) hashes to {self.head[:16]}...",
                )
            else:
                self.report.checkpoints_checked += 1
        if obj.get("kind") == "attachment" and is_hex_digest(obj.get("sha256")):
            at = obj.get("at") if isinstance(obj.get("at"), str) else None
            # The first line names the place; the latest `at` sets the retention wanted.
            self.db.execute(
                "INSERT INTO refs VALUES (?, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET "
                "at = max(coalesce(at, ''), coalesce(excluded.at, ''))",
                (obj["sha256"], obj.get("size"), where, at),
            )
        return obj

    # --- blobs ----------------------------------------------------------------------------

    async def blobs(self) -> None:
        referenced = set()
        rows = self.db.execute(
            "SELECT sha256, size, place, at FROM refs ORDER BY sha256"
        ).fetchall()
        self.report.blobs_referenced = len(rows)
        for sha, size, place, at in rows:
            key = blob_key(self.prefix, sha)
            referenced.add(key)
            latest = self.latest(key)
            if latest is None:
                self.problem("blob_missing", key, f"named by {place}, not in the bucket")
                continue
            version, found_size, modified = latest
            if found_size != size:
                self.problem("blob_size", key, f"{found_size} bytes, {place} says {size}")
            # Kept retention_days after the latest line that names it (a blob named again
            # later must outlive the later message too).
            since = (_parse_at(at) if at else None) or modified
            if self.rng.random() * 100.0 < self.report.sample_pct:
                self.report.blobs_checked += 1
                await self.blob_hash(key, version, sha, since, place)
            else:
                await self.head_lock(key, version, since)
        for key, version, modified in self.db.execute(
            "SELECT key, version, modified FROM objects WHERE key LIKE ? AND version IS NOT NULL",
            (f"{_like(self.prefix)}blobs/%",),
        ).fetchall():
            if key not in referenced and isinstance(parse_key(self.prefix, key), BlobKey):
                self.warning("orphan_blob", key, "no chunk names it (its chunk is on its way?)")
                await self.head_lock(key, version, datetime.fromisoformat(modified))

    async def blob_hash(
        self, key: str, version: str, sha: str, modified: datetime, place: str
    ) -> None:
        try:
            answer = await self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=version)
        except ClientError as exc:
            if status_of(exc) != 404:
                raise
            self.problem("object_vanished", key, "listed, then not found")
            return
        digest = hashlib.sha256()
        async with answer["Body"] as body:
            while block := await body.read(READ_BYTES):
                digest.update(block)
        if digest.hexdigest() != sha:
            self.problem(
                "blob_hash_mismatch", key, f"content hashes to {digest.hexdigest()} ({place})"
            )
        self.lock(key, dict(answer), modified)

    # --- the local head -------------------------------------------------------------------

    def local_head(self) -> None:
        root = self.config.root
        report = self.report
        if not manifest_dir(root).is_dir():
            self.warning("local_absent", str(root), "no local archive here: lag not measured")
            return
        segments = list_segments(manifest_dir(root))
        last_segment = self.chunk_ends[-1][0].segment if self.chunk_ends else 1
        local_seq, at_head = 0, None
        for n, path in segments:
            if n < last_segment and n != segments[-1][0]:
                continue
            with path.open("rb") as stream:
                for raw in stream:
                    if not raw.endswith(b"\n"):
                        break  # a line being written: not durable yet
                    body = raw[:-1]
                    try:
                        local_seq = int(json.loads(body)["seq"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if local_seq == report.last_seq:
                        at_head = line_hash(body)
        report.local_seq = local_seq
        if report.last_seq == 0:
            report.local, report.lag_lines = "same", local_seq
            return
        if local_seq < report.last_seq:
            report.local = "behind"
            self.problem(
                "bucket_ahead",
                "ROOT",
                f"the bucket holds seq 1..{report.last_seq}, {root} only 1..{local_seq}: this "
                "is not the archive that was replicated, or it lost lines (restore from the "
                "bucket)",
            )
        elif at_head != report.head:
            report.local = "diverged"
            self.problem(
                "head_diverged",
                "ROOT",
                f"the bucket's seq {report.last_seq} hashes to {report.head[:16]}..., the line "
                f"there in {root} to {(at_head or '-')[:16]}...: two different chains",
            )
        else:
            report.local, report.lag_lines = "same", local_seq - report.last_seq


def _like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _parse_at(at: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def render(report: AuditReport) -> str:
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    if report.local == "absent":
        local = "local archive absent: head not compared"
    elif report.local == "same":
        local = f"local head seq {report.local_seq}: the bucket is {report.lag_lines} lines behind"
    else:
        local = f"local head seq {report.local_seq}: {report.local}"
    out = [
        f"bucket {report.bucket} prefix {report.prefix!r}: {verdict}",
        f"  objects {report.objects}, chunks {report.chunks}, lines {report.lines}, "
        f"last seq {report.last_seq}",
        f"  head {report.head}",
        f"  blobs referenced {report.blobs_referenced}, re-hashed {report.blobs_checked} "
        f"(sample {report.sample_pct:g}%), every size checked",
        f"  lock mode {report.lock_mode}: every object's mode and retain-until checked"
        if report.lock_mode != "none"
        else "  lock mode none: no lock checked",
        f"  checkpoints {report.checkpoints_seen}, verified {report.checkpoints_checked}",
        f"  {local}",
    ]
    for title, items in (("problems", report.problems), ("warnings", report.warnings)):
        if items:
            out.append(f"{title} ({len(items)}):")
            out.extend(f"  {f.key}  {f.kind}: {f.detail}" for f in items)
    if report.problems_omitted:
        out.append(f"  ... and {report.problems_omitted} more problems")
    return "\n".join(out)


def report_to_json(report: AuditReport) -> dict[str, Any]:
    return dataclasses.asdict(report)


async def run_audit(
    config: Config, *, sample_pct: float, trust: Sequence[Ed25519PublicKey]
) -> AuditReport:
    """`replica verify`: connect (exit-2 refusals), then audit."""
    async with connect(config) as s3:
        return await audit_bucket(s3, config, sample_pct=sample_pct, trust=trust)
