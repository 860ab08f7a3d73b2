"""Download workers fed by a deadline queue: the attachment whose URL dies first goes first.

What is pending comes from the ledger in the state store, which the manifest writer fills in
the same transaction that indexes a message line, so a crash can never leave an archived
message whose attachments nobody will fetch. URLs (credentials) are kept only in memory; after
a restart, or when a URL is about to expire (`refresh_margin`), or after a 401/403, a fresh
one is fetched from the message endpoint, which draws from the rate budget like any call.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiver.config import DownloadConfig
from archiver.downloads.blobs import commit_blob
from archiver.downloads.fetch import Fetcher, FetchError
from archiver.downloads.urls import jwt_claims
from archiver.errors import StorageError, ZoomError
from archiver.ops.logs import get_logger
from archiver.zoom.models import JsonObject, attachments_of

Key = tuple[str, str, str]  # session_id, message_id, attachment_id

MAX_ATTEMPTS = 6  # transfer failures (resets, 5xx, short bodies) before attachment_failed
MAX_REFRESHES = 4  # fresh URLs tried before attachment_failed
RETRY_BASE = 1.0
MAX_IDLE_WAIT = 60.0  # re-check at least this often: the wall clock may have jumped


@dataclass
class Job:
    session_id: str
    message_id: str
    attachment_id: str
    name: str
    type: str
    size: int | None
    url: str | None = None
    exp: float | None = None
    dig: str | None = None
    attempts: int = 0  # downloads tried, for the record
    failures: int = 0  # transfer failures (resets, 5xx, short bodies): backoff and the limit
    refreshes: int = 0
    not_before: float = 0.0

    @property
    def key(self) -> Key:
        return (self.session_id, self.message_id, self.attachment_id)


@dataclass
class DownloadStats:
    done: int = 0
    failed: int = 0
    bytes: int = 0
    refreshes: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)


class DownloadManager:
    def __init__(
        self,
        config: DownloadConfig,
        root: Path,
        *,
        state: Any,
        writer: Any,
        client: Any,
        fetcher: Fetcher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._root = root
        self._state = state
        self._writer = writer
        self._client = client
        self._fetcher = fetcher
        self._clock = clock
        self._heap: list[tuple[float, int, Key]] = []
        self._jobs: dict[Key, Job] = {}
        self._active: set[Key] = set()
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._rate = 0.0  # bytes per second, exponentially averaged
        self.stats = DownloadStats()
        self.fatal: BaseException | None = None
        self._log = get_logger(component="downloads")

    # --- feeding the queue ----------------------------------------------------------------

    def load_pending(self) -> int:
        """Queue everything the ledger says is pending (after a restart: URLs unknown)."""
        count = 0
        for row in self._state.pending_attachments():
            job = Job(
                session_id=row.session_id,
                message_id=row.message_id,
                attachment_id=row.attachment_id,
                name=row.name,
                type=row.type,
                size=row.size,
            )
            if self._push(job):
                count += 1
        return count

    async def on_archived(self, session_id: str, records: list[JsonObject]) -> None:
        """Hook for the sync path: the page is durable; queue its attachments with their URLs."""
        for record in records:
            for att in attachments_of(record):
                key = (session_id, record["message_id"], att.attachment_id)
                if not self._state.attachment_pending(*key):
                    continue
                claims = jwt_claims(att.download_url) if att.download_url else None
                job = self._jobs.get(key) or Job(
                    session_id=session_id,
                    message_id=record["message_id"],
                    attachment_id=att.attachment_id,
                    name=att.name,
                    type=att.type,
                    size=att.size,
                )
                if att.download_url and key not in self._active:
                    job.url = att.download_url
                    job.exp = claims.exp if claims else None
                    job.dig = claims.dig if claims else None
                self._push(job)
        await self.wait_for_capacity()

    def _push(self, job: Job) -> bool:
        if job.key in self._active:
            return False
        fresh = job.key not in self._jobs
        self._jobs[job.key] = job
        deadline = job.exp if job.exp is not None else 0.0  # unknown URL: refresh first
        heapq.heappush(self._heap, (max(deadline, job.not_before), next(self._counter), job.key))
        self._wakeup.set()
        return fresh

    # --- state for the supervisor, metrics and --once ------------------------------------

    @property
    def depth(self) -> int:
        return len(self._jobs)

    def idle(self) -> bool:
        return not self._jobs and not self._active

    def earliest_deadline(self) -> float | None:
        deadlines = [job.exp for job in self._jobs.values() if job.exp is not None]
        return min(deadlines) if deadlines else None

    def backlog_seconds(self) -> float:
        if not self._jobs:
            return 0.0
        if self._rate <= 0:
            return 0.0  # nothing measured yet: no grounds to slow sync down
        known = [job.size for job in self._jobs.values() if job.size is not None]
        average = sum(known) / len(known) if known else 1 << 20
        backlog = sum(job.size if job.size is not None else average for job in self._jobs.values())
        return backlog / self._rate

    def should_slow_sync(self) -> bool:
        """True when the backlog could not drain before the earliest URL expires."""
        earliest = self.earliest_deadline()
        if earliest is None:
            return False
        window = earliest - self._config.refresh_margin - self._clock()
        return self.backlog_seconds() > max(window, 0.0)

    async def wait_for_capacity(self, limit: float = 30.0) -> None:
        """Backpressure: hold a sync worker (bounded) while downloads are behind."""
        deadline = time.monotonic() + limit
        # A condition computed from rates and clocks, not an event anyone could set.
        while self.should_slow_sync() and time.monotonic() < deadline and self.fatal is None:  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    # --- workers --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(self._config.workers):
                group.create_task(self._worker(stop))
            group.create_task(self._wake_on(stop))

    async def _wake_on(self, stop: asyncio.Event) -> None:
        """Idle workers sleep until a job comes (no polling); stopping must wake them too."""
        await stop.wait()
        self._wakeup.set()

    async def _next_job(self, stop: asyncio.Event) -> Job | None:
        while not stop.is_set():
            now = self._clock()
            while self._heap:
                _, _, key = self._heap[0]
                job = self._jobs.get(key)
                if job is None or key in self._active:
                    heapq.heappop(self._heap)
                    continue
                if job.not_before > now:
                    break
                heapq.heappop(self._heap)
                self._active.add(key)
                return job
            self._wakeup.clear()
            timeout = None  # nothing queued: wait for _push or stop
            if self._heap:  # the first job waits for its backoff (not_before) to end
                ready_in = self._jobs[self._heap[0][2]].not_before - now
                timeout = min(MAX_IDLE_WAIT, max(0.01, ready_in))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
        return None

    async def _worker(self, stop: asyncio.Event) -> None:
        while True:
            job = await self._next_job(stop)
            if job is None:
                return
            try:
                await self._process(job)
            except StorageError as exc:
                self.fatal = exc
                stop.set()
                raise
            finally:
                self._active.discard(job.key)

    async def _process(self, job: Job) -> None:
        log = self._log.bind(
            session_id=job.session_id, message_id=job.message_id, attachment_id=job.attachment_id
        )
        while True:
            if job.url is None or self._expiring(job):
                if job.refreshes >= MAX_REFRESHES:
                    await self._fail(job, "download URL kept failing after refreshes")
                    return
                if not await self._refresh(job):
                    return
            started = time.monotonic()
            try:
                fetched = await self._fetcher.fetch(
                    job.url or "", expected_size=job.size, dig=job.dig
                )
            except FetchError as exc:
                job.attempts += 1
                if exc.refresh:
                    # A refused URL is not a transfer failure: a fresh URL fixes it at once.
                    log.info("download_url_refused", reason=exc.reason)
                    job.url = None
                    continue
                job.failures += 1
                if exc.retryable and job.failures < MAX_ATTEMPTS:
                    log.info("download_retry", reason=exc.reason, attempts=job.attempts)
                    self._retry_later(job)
                    return
                await self._fail(job, exc.reason)
                return
            elapsed = max(time.monotonic() - started, 1e-3)
            self._rate = (
                fetched.size / elapsed
                if self._rate == 0
                else (0.8 * self._rate + 0.2 * fetched.size / elapsed)
            )
            await self._store(job, fetched.path, fetched.sha256, fetched.size)
            return

    def _retry_later(self, job: Job) -> None:
        job.not_before = self._clock() + RETRY_BASE * 2 ** (job.failures - 1)
        self._active.discard(job.key)
        self._push(job)

    def _expiring(self, job: Job) -> bool:
        return job.exp is not None and job.exp - self._clock() < self._config.refresh_margin

    async def _refresh(self, job: Job) -> bool:
        """Fetch a fresh URL from the message endpoint. False when the job is settled."""
        job.refreshes += 1
        self.stats.refreshes += 1
        try:
            record = await self._client.get_message(job.session_id, job.message_id)
        except ZoomError as exc:
            if exc.status == 404:
                await self._fail(job, "message gone upstream")
                return False
            job.failures += 1
            if job.failures >= MAX_ATTEMPTS:
                await self._fail(job, f"could not refresh the URL: {type(exc).__name__}")
                return False
            job.refreshes -= 1  # the URL was never had: this try does not count as a refresh
            self._retry_later(job)
            return False
        for att in attachments_of(record):
            if att.attachment_id == job.attachment_id and att.download_url:
                claims = jwt_claims(att.download_url)
                job.url, job.exp, job.dig = att.download_url, claims.exp, claims.dig
                if att.size is not None:
                    job.size = att.size
                return True
        await self._fail(job, "attachment gone upstream")
        return False

    async def _store(self, job: Job, tmp: Path, sha256: str, size: int) -> None:
        try:
            blob = await commit_blob(self._root, tmp, sha256)
        except OSError as exc:
            raise StorageError(f"cannot store blob: {exc.strerror or exc}") from exc
        entries: list[dict[str, Any]] = [
            {
                "kind": "attachment",
                "session_id": job.session_id,
                "message_id": job.message_id,
                "attachment_id": job.attachment_id,
                "name": job.name,
                "type": job.type,
                "size": size,
                "sha256": sha256,
                "blob": blob,
            }
        ]
        if job.dig is not None and job.dig != sha256:
            entries.append(
                {
                    "kind": "event",
                    "event": "attachment_dig_mismatch",
                    "session_id": job.session_id,
                    "message_id": job.message_id,
                    "attachment_id": job.attachment_id,
                    "sha256": sha256,
                    "dig": job.dig,
                }
            )
        await self._writer.append_entries(entries)
        self._jobs.pop(job.key, None)
        self.stats.done += 1
        self.stats.bytes += size

    async def _fail(self, job: Job, reason: str) -> None:
        await self._writer.append_entries(
            [
                {
                    "kind": "attachment_failed",
                    "session_id": job.session_id,
                    "message_id": job.message_id,
                    "attachment_id": job.attachment_id,
                    "name": job.name,
                    "type": job.type,
                    "size": job.size,
                    "reason": reason,
                    "attempts": job.attempts,
                }
            ]
        )
        self._jobs.pop(job.key, None)
        self.stats.failed += 1
        self.stats.failures_by_reason[reason] = self.stats.failures_by_reason.get(reason, 0) + 1
        self._log.warning(
            "attachment_failed",
            session_id=job.session_id,
            message_id=job.message_id,
            attachment_id=job.attachment_id,
            reason=reason,
        )
