"""The replicator: the daemon's task that copies the archive into the bucket as it grows.

It reads the manifest segments (aiofiles) behind the writer, only lines the writer has made
durable, and cuts them into chunks: consecutive lines, byte for byte, never straddling a
segment. A chunk closes at `chunk_max_bytes`, at a segment's end, or `max_lag / 2` after its
first line was read (so a line is in the bucket well within `max_lag`). Before a chunk goes
up, every blob its `attachment` lines name is uploaded and confirmed, so the bucket never
references a blob it lacks; signed checkpoints follow once the chunk holding their seq is in.

Failures never reach archiving: the task retries with backoff (1 s doubling to 60 s, and to no
more than `max_lag`, so a bucket that is back is noticed within the lag objective) and keeps
the closed chunk as it was, so a retry PUTs the same key with the same bytes (a 412 with equal
bytes is an idempotent resume). An object at one of our keys with other bytes
(`ReplicaConflict`) stops replication with an alarm; archiving goes on.

Where it resumes: the last chunk in the bucket (listing after the hint kept in state, so a
SIGKILL between a PUT and the state update is seen) and the byte offset after its last line.
The state's cache of keys in the bucket speaks of one bucket (endpoint, bucket, prefix, in
META_BUCKET): another one, or a bucket that holds no chunk of ours, empties it, so a blob is
never skipped on the cache alone.

Retention: a chunk is locked until its last line's `at` + `retention_days` + 1 day, a blob
until the latest `at` of the lines naming it (its upload, at the least) + the same: a blob
named again by a later chunk gets its retention extended (PutObjectRetention, which
COMPLIANCE allows) before that chunk goes up. Never less than now + 1 day (old lines).

Deadlines: every call to the bucket has a total one (`CALL_TIMEOUT`, plus the body's size
at `MIN_RATE`): a bucket that answers a byte at a time is a failure, retried, never a hang.
A refusal no retry can fix (a 4xx that is no 412/409) stops replication with an alarm naming
the key (`ReplicaRefused`), as does a manifest line over `LINE_MAX`. The figures (`stats`)
are measured when read, so a hung round never reads as "caught up".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import aiofiles

from archiver.config import ReplicaConfig
from archiver.ops.logs import get_logger
from archiver.replica.bucket import (
    ChunkKey,
    PutOutcome,
    ReplicaBucketError,
    ReplicaConflict,
    ReplicaRefused,
    blob_key,
    check_bucket,
    checkpoint_key,
    chunk_key,
    describe,
    failure_label,
    parse_key,
    policy_until,
    put_new,
    refusals,
    retain_until,
)
from archiver.replica.upload import abort_stale_uploads, upload_blob
from archiver.store.checkpoint import list_checkpoints
from archiver.store.crash import crash_point
from archiver.store.layout import blob_path, list_segments, manifest_dir

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from archiver.store.state import State

META_POSITION: Final = "replica.position"
META_SNAPSHOT: Final = "replica.snapshot"  # what `status` shows (ops/status.py)
META_BUCKET: Final = "replica.bucket"  # the bucket the cache and position speak of
SNAPSHOT_EVERY: Final = 5.0  # seconds between snapshots written to the state
READ_BYTES: Final = 4 * 1024 * 1024
LINE_MAX: Final = 256 * 1024 * 1024  # a manifest line longer than this stops replication
BACKOFF_MAX: Final = 60.0
CALL_TIMEOUT: Final = 60.0  # seconds, a call's total deadline before its body's share
MIN_RATE: Final = 128 * 1024  # bytes/s: the slowest upload still waited for
PREPARE_TIMEOUT: Final = 300.0  # the start: bucket check, stale uploads, where to resume


class ReplicaStalled(ReplicaConflict):
    """Replication cannot go on past a line (too long to read): it stops, with an alarm."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        Exception.__init__(self, f"replication stopped at {key}: {detail}")


def deadline(size: int = 0) -> float:
    """The total deadline of one call that sends `size` bytes."""
    return CALL_TIMEOUT + size / MIN_RATE


def log() -> Any:
    return get_logger(component="replica")


@dataclass
class Chunk:
    segment: int
    start: int  # byte offset in the segment of its first line
    lines: list[bytes] = field(default_factory=list)  # each with its newline
    first: int = 0
    last: int = 0
    last_at: str = ""
    first_at: str = ""
    blobs: dict[str, str] = field(default_factory=dict)  # sha256 -> latest `at` naming it
    opened: float = 0.0  # monotonic time its first line was read

    @property
    def size(self) -> int:
        return sum(len(line) for line in self.lines)

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class ReplicaStats:
    replicated_seq: int = 0
    lines_behind: int = 0
    bytes_behind: int = 0
    oldest_unreplicated: float | None = None  # unix time of the oldest line not yet in
    uploads: Counter[str] = field(default_factory=Counter)  # chunk, blob, checkpoint
    failures: Counter[str] = field(default_factory=Counter)  # by reason
    last_success: float | None = None
    stopped: str | None = None  # why replication stopped (a conflict), else None

    def lag_seconds(self, now: float | None = None) -> float:
        if self.oldest_unreplicated is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.oldest_unreplicated)

    def snapshot(self) -> dict[str, Any]:
        """The figures of `/metrics`, for `status` (JSON in the state's meta)."""
        return {
            "at": time.time(),
            "replicated_seq": self.replicated_seq,
            "lines_behind": self.lines_behind,
            "bytes_behind": self.bytes_behind,
            "lag_seconds": round(self.lag_seconds(), 1),
            "uploads": dict(self.uploads),
            "failures": dict(self.failures),
            "last_success": self.last_success,
            "stopped": self.stopped,
        }


def _when(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(UTC)


def _unix(at: str) -> float:
    return _when(at).timestamp()


class Replicator:
    """One per daemon. `prepare()` once (refusals are `ReplicaBucketError`), then `run()`."""

    def __init__(
        self,
        config: ReplicaConfig,
        root: Path,
        s3: S3Client,
        *,
        state: State | None = None,
        durable_seq: Callable[[], int] | None = None,
        checked: bool = True,
    ) -> None:
        self.config = config
        self.root = root
        self.s3 = s3
        self.state = state
        self.durable_seq = durable_seq or (lambda: 1 << 62)
        self._stats = ReplicaStats()
        self._segment = 1
        self._offset = 0  # bytes of self._segment in the bucket (or in the chunk being built)
        self._open: Chunk | None = None
        self._closed: Chunk | None = None
        self._failures_in_row = 0
        self._checked = checked  # the start-up check passed (else prepare() runs it)
        self._prepared = False
        # One round at a time: the task and a `catch_up` must never read the same lines twice.
        self._step_lock = asyncio.Lock()
        self._published = 0.0  # monotonic time of the last snapshot written

    @property
    def stats(self) -> ReplicaStats:
        """The figures, measured now (the writer's durable seq against the bucket's)."""
        self._measure()
        return self._stats

    # --- start ---------------------------------------------------------------------------

    async def prepare(self) -> None:
        """The bucket check (when start-up could not reach it), stale multipart uploads
        aborted, and where to resume. Run by `run()` / `catch_up()` before the first round."""
        async with asyncio.timeout(PREPARE_TIMEOUT):
            if not self._checked:
                for warning in await check_bucket(self.s3, self.config):
                    log().warning("replica_bucket_warning", warning=warning)
                self._checked = True
            self._same_bucket()
            aborted = await abort_stale_uploads(self.s3, self.config.bucket, self.config.prefix)
            if aborted:
                log().warning("replica_stale_uploads_aborted", count=aborted)
            await self._resume_point()
        self._prepared = True

    def _same_bucket(self) -> None:
        """The state's cache and position speak of META_BUCKET: another bucket empties them."""
        if self.state is None:
            return
        cfg = self.config
        here = json.dumps(
            {"endpoint": cfg.endpoint_url, "bucket": cfg.bucket, "prefix": cfg.prefix},
            sort_keys=True,
        )
        if self.state.get_meta(META_BUCKET) != here:
            self.state.replica_reset()
            self.state.delete_meta(META_POSITION)
            self.state.set_meta(META_BUCKET, here)

    async def _resume_point(self) -> None:
        hint = self.state.get_meta(META_POSITION) if self.state else None
        start_after = ""
        if hint:
            start_after = json.loads(hint)["key"]
        last = await self._last_chunk(start_after)
        if last is None and start_after:
            # The hint's own chunk: trust it only if the bucket still has it.
            last = await self._last_chunk("")
        if last is None:
            self._segment, self._offset, self._stats.replicated_seq = 1, 0, 0
            if self.state is not None:  # no chunk of ours: a new (or emptied) bucket
                self.state.replica_reset()
            return
        self._segment = last.segment
        self._offset = await self._offset_after(last.segment, last.last)
        self._stats.replicated_seq = last.last

    async def _last_chunk(self, start_after: str) -> ChunkKey | None:
        prefix = f"{self.config.prefix}manifest/"
        paginator = self.s3.get_paginator("list_objects_v2")
        found: ChunkKey | None = None
        kwargs: dict[str, Any] = {"Bucket": self.config.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        async for page in paginator.paginate(**kwargs):
            for obj in page.get("Contents", []):
                parsed = parse_key(self.config.prefix, obj.get("Key", ""))
                if isinstance(parsed, ChunkKey) and (
                    found is None or (parsed.segment, parsed.last) > (found.segment, found.last)
                ):
                    found = parsed
        return found

    async def _offset_after(self, segment: int, seq: int) -> int:
        """The byte offset just after line `seq` in `segment` (the local copy)."""
        path = manifest_dir(self.root) / f"{segment:06d}.jsonl"
        offset = 0
        async with aiofiles.open(path, "rb") as fh:
            async for line in fh:
                offset += len(line)
                if json.loads(line)["seq"] == seq:
                    return offset
        raise ReplicaConflict(
            chunk_key(self.config.prefix, segment, seq, seq),
            f"the bucket's head (seq {seq}) is not in local segment {segment}",
        )

    # --- the task ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        interval = min(1.0, self.config.max_lag / 4)
        while not stop.is_set() and self._stats.stopped is None:
            try:
                await self.step(flush=False)
                self._failures_in_row = 0
                delay = interval
            except ReplicaConflict as exc:
                self._stop(exc)
                break
            except ReplicaBucketError as exc:  # found only once the bucket answered
                self._stats.stopped = str(exc)
                self._stats.failures["bucket"] += 1
                log().error("replica_bucket_refused", error=str(exc))
                break
            except Exception as exc:  # any failure is the bucket's: retry, never stop archiving
                reason = describe(exc)
                self._stats.failures[failure_label(exc)] += 1
                self._failures_in_row += 1
                ceiling = max(1.0, min(BACKOFF_MAX, self.config.max_lag))
                delay = min(ceiling, 2.0 ** (self._failures_in_row - 1))
                delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
                log().warning("replica_retry", reason=reason, retry_in=round(delay, 1))
            self.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        self.publish(force=True)

    async def catch_up(self, deadline: float) -> bool:
        """For `run --once`: upload everything durable now, closing chunks early; True when
        the bucket has it all before `deadline` (monotonic)."""
        try:
            return await self._catch_up(deadline)
        finally:
            self.publish(force=True)

    async def _catch_up(self, until: float) -> bool:
        target = self.durable_seq()
        while self._stats.stopped is None:
            left = until - time.monotonic()
            if left <= 0:
                return False
            bound = asyncio.timeout(left)  # a hung round must not outstay the deadline
            try:
                async with bound:
                    await self.step(flush=True)
                self._failures_in_row = 0
            except ReplicaConflict as exc:
                self._stop(exc)
                return False
            except Exception as exc:
                if bound.expired():
                    self._stats.failures["deadline"] += 1
                    return False
                self._stats.failures[failure_label(exc)] += 1
                log().warning("replica_retry", reason=describe(exc))
                self._failures_in_row += 1
                pause = min(5.0, 0.5 * self._failures_in_row, max(0.0, until - time.monotonic()))
                await asyncio.sleep(pause)
                continue
            if self._stats.replicated_seq >= target and self._open is None:
                return True
        return False

    def _stop(self, exc: ReplicaConflict) -> None:
        """The alarm: metrics (stopped, failures), status (the snapshot), the log."""
        reason = {ReplicaRefused: "refused", ReplicaStalled: "stalled"}.get(type(exc), "conflict")
        self._stats.stopped = str(exc)
        self._stats.failures[reason] += 1
        log().error(f"replica_{reason}", key=exc.key, error=str(exc))
        self.publish(force=True)

    def publish(self, *, force: bool = False) -> None:
        """Write the snapshot `status` reads, at most every SNAPSHOT_EVERY seconds."""
        now = time.monotonic()
        if self.state is None or (not force and now - self._published < SNAPSHOT_EVERY):
            return
        self._measure()
        self.state.set_meta(META_SNAPSHOT, json.dumps(self._stats.snapshot(), sort_keys=True))
        self._published = now

    def behind(self) -> str:
        """`replica N lines / B bytes behind` (and why it stopped, if it did)."""
        self._measure()
        stats = self.stats
        text = f"replica {stats.lines_behind} lines / {stats.bytes_behind} bytes behind"
        if stats.stopped:
            return f"{text} (stopped: {stats.stopped})"
        if stats.failures:
            reasons = ", ".join(f"{n} {r}" for r, n in stats.failures.most_common(3))
            return f"{text} (failures: {reasons})"
        return text

    async def step(self, *, flush: bool) -> None:
        """One round: read what is new, upload what is closed, then the checkpoints."""
        async with self._step_lock:
            if not self._prepared:
                await self.prepare()
            if self._closed is not None:
                await self._upload(self._closed)
            await self._read(flush=flush)
            if self._closed is not None:
                await self._upload(self._closed)
            await self._checkpoints()
            self._measure()

    # --- reading -------------------------------------------------------------------------

    async def _read(self, *, flush: bool) -> None:
        durable = self.durable_seq()
        segments = dict(list_segments(manifest_dir(self.root)))
        while self._closed is None:
            path = segments.get(self._segment)
            if path is None:
                break
            consumed = self._open.end if self._open else self._offset
            data = await self._read_lines(path, consumed)
            complete = data[: data.rfind(b"\n") + 1]
            moved = self._take(complete, durable)
            if self._closed is not None:
                break
            ended = self._open.end if self._open else self._offset
            at_end = ended >= path.stat().st_size
            if at_end and (self._segment + 1) in segments:
                self._close()  # the segment is complete: a chunk never straddles two
                if self._closed is None:
                    self._segment, self._offset = self._segment + 1, 0
                break
            if not moved:
                break
        chunk = self._open
        if chunk is not None and self._closed is None:
            age = time.monotonic() - chunk.opened
            if flush or age >= self.config.max_lag / 2:
                self._close()

    async def _read_lines(self, path: Path, offset: int) -> bytes:
        """READ_BYTES from `offset`, and on until a newline when a line is longer (a line
        over chunk_max_bytes is a chunk of its own); a line over LINE_MAX stops replication."""
        async with aiofiles.open(path, "rb") as fh:
            await fh.seek(offset)
            data = await fh.read(READ_BYTES)
            if b"\n" in data or len(data) < READ_BYTES:
                return bytes(data)
            buffer = bytearray(data)
            while b"\n" not in data:
                if len(buffer) > LINE_MAX:
                    raise ReplicaStalled(
                        f"{path.name} at byte {offset}",
                        f"a manifest line over {LINE_MAX} bytes; the bucket holds the lines "
                        "before it, archiving goes on",
                    )
                data = await fh.read(READ_BYTES)
                if not data:
                    break  # the line is still being written
                buffer += data
            return bytes(buffer)

    def _take(self, data: bytes, durable: int) -> bool:
        """Add complete, durable lines to the open chunk; False when none was taken."""
        moved = False
        start = 0
        expected = (self._open.last if self._open else self._stats.replicated_seq) + 1
        while start < len(data):
            end = data.index(b"\n", start) + 1
            line = data[start:end]
            obj = json.loads(line)
            seq = obj["seq"]
            if seq > durable:
                break
            if seq != expected:
                raise ReplicaConflict(
                    chunk_key(self.config.prefix, self._segment, expected, expected),
                    f"local seq {seq} follows {expected - 1}: the manifest moved under us",
                )
            chunk = self._open
            if chunk is not None and chunk.size + len(line) > self.config.chunk_max_bytes:
                self._close()
                return True
            if chunk is None:
                chunk = self._open = Chunk(
                    self._segment, self._offset, first=seq, opened=time.monotonic()
                )
                chunk.first_at = obj["at"]
            chunk.lines.append(line)
            chunk.last, chunk.last_at = seq, obj["at"]
            if obj.get("kind") == "attachment" and isinstance(obj.get("sha256"), str):
                chunk.blobs[obj["sha256"]] = max(chunk.blobs.get(obj["sha256"], ""), obj["at"])
            expected = seq + 1
            start = end
            moved = True
        return moved

    def _close(self) -> None:
        if self._open is not None and self._open.lines:
            self._closed, self._open = self._open, None

    # --- uploading -----------------------------------------------------------------------

    async def _upload(self, chunk: Chunk) -> None:
        cfg = self.config
        for sha, at in chunk.blobs.items():
            await self._blob(sha, _when(at))
        key = chunk_key(cfg.prefix, chunk.segment, chunk.first, chunk.last)
        last_at = _when(chunk.last_at)
        until = retain_until(last_at, cfg.retention_days)
        body = b"".join(chunk.lines)
        crash_point("replica_before_chunk_put")
        with refusals(key):
            async with asyncio.timeout(deadline(len(body))):
                await put_new(
                    self.s3,
                    cfg.bucket,
                    key,
                    body,
                    mode=cfg.lock_mode,
                    until=None if cfg.lock_mode == "none" else until,
                    content_type="application/x-ndjson",
                    min_until=policy_until(last_at, cfg.retention_days),
                )
        crash_point("replica_after_chunk_put")
        self._stats.uploads["chunk"] += 1
        self._stats.replicated_seq = chunk.last
        self._stats.last_success = time.time()
        self._segment, self._offset = chunk.segment, chunk.end
        self._closed = None
        if self.state is not None:
            self.state.set_meta(META_POSITION, json.dumps({"key": key, "offset": chunk.end}))

    async def _blob(self, sha: str, at: datetime) -> None:
        """The blob in the bucket, retained at least `retention_days` after `at` (the latest
        line naming it in the chunk about to go up): uploaded, or its retention extended."""
        cfg = self.config
        key = blob_key(cfg.prefix, sha)
        policy = policy_until(at, cfg.retention_days)
        known = self.state.replica_until(key) if self.state is not None else None
        if known is not None and (cfg.lock_mode == "none" or (known and _when(known) >= policy)):
            return
        locked = cfg.lock_mode != "none"
        if known is None:
            path = blob_path(self.root, sha)
            until = retain_until(max(at, datetime.now(UTC)), cfg.retention_days)
            with refusals(key):
                async with asyncio.timeout(deadline(path.stat().st_size)):
                    outcome = await upload_blob(
                        self.s3,
                        cfg.bucket,
                        key,
                        path,
                        sha,
                        mode=cfg.lock_mode,
                        until=until if locked else None,
                    )
            self._stats.uploads["blob"] += 1
            if outcome is PutOutcome.CREATED or not locked:
                self._known(key, until if locked else None)
                return
            with refusals(key):  # there already (a resume, or a blob named before)
                async with asyncio.timeout(CALL_TIMEOUT):
                    found = await self.s3.get_object_retention(Bucket=cfg.bucket, Key=key)
            held = found.get("Retention", {}).get("RetainUntilDate")
            if held is not None and held >= policy:
                self._known(key, held)
                return
        wanted = retain_until(at, cfg.retention_days)
        mode: Literal["COMPLIANCE", "GOVERNANCE"] = (
            "COMPLIANCE" if cfg.lock_mode == "COMPLIANCE" else "GOVERNANCE"
        )
        with refusals(key):  # extending is allowed, COMPLIANCE too
            async with asyncio.timeout(CALL_TIMEOUT):
                await self.s3.put_object_retention(
                    Bucket=cfg.bucket,
                    Key=key,
                    Retention={"Mode": mode, "RetainUntilDate": wanted},
                )
        self._stats.uploads["retention"] += 1
        self._known(key, wanted)

    def _known(self, key: str, until: datetime | None) -> None:
        if self.state is not None:
            self.state.replica_add([key], until.astimezone(UTC).isoformat() if until else "")

    async def _checkpoints(self) -> None:
        cfg = self.config
        for seq, path in list_checkpoints(self.root):
            if seq > self._stats.replicated_seq:
                break  # never a checkpoint beyond the chain the bucket holds
            key = checkpoint_key(cfg.prefix, seq)
            if self.state is not None and self.state.replica_has(key):
                continue
            async with aiofiles.open(path, "rb") as fh:
                note = await fh.read()
            written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            until = retain_until(datetime.now(UTC), cfg.retention_days)
            with refusals(key):
                async with asyncio.timeout(deadline(len(note))):
                    await put_new(
                        self.s3,
                        cfg.bucket,
                        key,
                        note,
                        mode=cfg.lock_mode,
                        until=None if cfg.lock_mode == "none" else until,
                        content_type="text/plain; charset=utf-8",
                        min_until=policy_until(written, cfg.retention_days),
                    )
            self._stats.uploads["checkpoint"] += 1
            self._known(key, until)

    # --- lag -----------------------------------------------------------------------------

    def _measure(self) -> None:
        stats = self._stats
        durable = self.durable_seq()
        if durable >= 1 << 62:  # no writer to ask (tests, tools): what was read is the bound
            durable = self._open.last if self._open else stats.replicated_seq
            durable = max(durable, self._closed.last if self._closed else 0)
        stats.lines_behind = max(0, durable - stats.replicated_seq)
        behind = 0
        for n, path in list_segments(manifest_dir(self.root)):
            if n >= self._segment:
                behind += path.stat().st_size
        stats.bytes_behind = max(0, behind - self._offset) if stats.lines_behind else 0
        pending = self._closed or self._open
        if pending is not None:
            stats.oldest_unreplicated = _unix(pending.first_at)
        elif stats.lines_behind == 0:
            stats.oldest_unreplicated = None
        elif stats.oldest_unreplicated is None:
            stats.oldest_unreplicated = time.time()
