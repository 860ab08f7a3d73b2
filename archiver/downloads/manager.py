"""Download workers fed by a deadline queue: the attachment whose URL dies first goes first.

What is pending comes from the ledger in the state store, which the manifest writer fills in
the same transaction that indexes a message line, so a crash can never leave an archived
message whose attachments nobody will fetch. The ledger is read again every `reload_interval`
seconds (and whenever `idle()` finds a job it does not hold), so a job written without passing
through `on_archived` is fetched within the run. URLs (credentials) are kept only in memory;
after a restart, or when a URL is about to expire (`refresh_margin`), or after a 401/403, a
fresh one is fetched from the message endpoint, which draws from the rate budget like any call.

A refresh that meets anything short of evidence (a paused budget, a transient error, a refusal
of that one request: `policy.action_of`) parks the job: it waits (the budget's `resume_at`, or
a capped backoff) and tries again, as often as it takes, without counting as a failed
download. The file host is treated the same way: a reset, a timeout, a short body, a 5xx or
429, a gateway's HTML 404/403 page, any status we do not understand parks the job with the same
capped backoff (`file_host`), as often as it takes; a gateway's refusal also drops the URL, so
the job asks for a fresh one when its pause is over. A refusal in the file host's own words
(its JSON 401/403/404/410, an error document, a size other than advertised) drops the URL too
and pauses (`url_refused`): a fresh URL is asked for only after a pause, and only a *fresh*
URL refused again counts; MAX_REFRESHES of those are evidence.

Only evidence ends a job in `attachment_failed`: Zoom's 12004 for the message, a record
without the attachment, MAX_REFRESHES fresh URLs refused by the file host itself, a size over
`max_bytes`, a host or certificate the policy refuses. `--once` does not wait for ever on a
job that keeps failing without evidence: `settled_for_once` ends the pass, incomplete and
saying why, once every job is parked with six tries in a row that brought no file.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from archiver.config import DownloadConfig
from archiver.downloads.blobs import commit_blob
from archiver.downloads.fetch import Fetcher, FetchError
from archiver.downloads.urls import jwt_claims
from archiver.errors import StorageError, ZoomError
from archiver.ops.logs import get_logger
from archiver.ops.serving import Sampler, is_resource_exhaustion
from archiver.zoom.models import JsonObject, attachments_of
from archiver.zoom.policy import Action, action_of
from archiver.zoom.ratelimit import BudgetExhausted

Key = tuple[str, str, str]  # session_id, message_id, attachment_id

MAX_REFRESHES = 4  # fresh URLs refused by the file host itself before attachment_failed
RETRY_BASE = 1.0  # seconds before the first retry after a file host failure without evidence
# Answers that end a job at once: over max_bytes, and what our policy refuses (a host, a
# scheme, an address, a certificate). Every other FetchError is retried.
FINAL_CODES: Final = frozenset({"too_large", "url_refused", "tls"})
FILE_HOST: Final = "file_host"  # parked: the file host failed without evidence (Job.parked)
URL_REFUSED: Final = "url_refused"  # parked: the file host refused the URL; fresh one next
# parked: the message lists the attachment without a usable download_url (Zoom documents
# neither when it is given nor its lifetime): listed is evidence it exists, refresh later
NO_URL: Final = "no_url"
MAX_IDLE_WAIT = 60.0  # re-check at least this often: the wall clock may have jumped
RELOAD_INTERVAL = 30.0  # seconds between reads of the ledger for jobs written behind our back
PARK_BASE = 1.0  # seconds before the first retry of a refused refresh or a refused URL
PARK_CAP = 600.0  # the longest backoff between two tries of a parked job


def park_delay(parkings: int, rng: random.Random, base: float | None = None) -> float:
    """Seconds a job waits after its `parkings`-th refusal in a row: doubling from `base`
    (PARK_BASE) up to PARK_CAP, with half of it jittered so jobs parked together do not retry
    together."""
    start = PARK_BASE if base is None else base
    ceiling = min(PARK_CAP, start * 2.0 ** min(max(parkings - 1, 0), 30))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


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
    failures: int = 0  # file host failures without evidence (resets, 5xx, gateway pages)
    refreshes: int = 0  # fresh URLs fetched
    refusals: int = 0  # fresh URLs the file host itself refused: MAX_REFRESHES is evidence
    fresh: bool = False  # the URL came from a refresh (not from a sync page or a webhook)
    not_before: float = 0.0
    # Tries in a row that brought no file (a refused refresh, a file host failure, a refused
    # URL): the backoff and `stalled`. Never reset by a fresh URL alone, which is no file:
    # a gateway that refuses every fresh URL must not be asked again every second.
    parkings: int = 0
    parked: str | None = None  # why the last try brought no file (an Action's value, FILE_HOST
    # or URL_REFUSED)

    @property
    def key(self) -> Key:
        return (self.session_id, self.message_id, self.attachment_id)


@dataclass
class DownloadStats:
    done: int = 0
    failed: int = 0
    bytes: int = 0
    refreshes: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)  # fetch.CODES -> lines
    resource_waits: int = 0  # fetches put off because descriptors or memory ran out here
    parkings_by_reason: dict[str, int] = field(default_factory=dict)
    reloaded: int = 0  # jobs found in the ledger after start (not handed over by on_archived)


@dataclass(frozen=True, slots=True)
class Stalled:
    """Every queued job is parked, each with `parkings` tries or more in a row that brought
    no file (refused refreshes, file host failures, refused URLs): what a `--once` pass
    reports as incomplete rather than waiting for ever."""

    count: int
    reasons: dict[str, int]
    first: tuple[Key, ...]  # a few of them, for the one-line summary


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
        reload_interval: float = RELOAD_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._root = root
        self._state = state
        self._writer = writer
        self._client = client
        self._fetcher = fetcher
        self._clock = clock
        self._heap: list[tuple[float, int, Key]] = []  # ready jobs, earliest URL expiry first
        self._later: list[tuple[float, int, Key]] = []  # waiting jobs, by not_before
        self._jobs: dict[Key, Job] = {}
        self._active: set[Key] = set()
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._reload_now = asyncio.Event()
        self._reload_interval = reload_interval
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._rate = 0.0  # bytes per second, exponentially averaged
        # Out of descriptors or memory, every queued job would log its own wait each try:
        # one line per minute of an episode (with what it left out), one when it is over.
        self._resource_log = Sampler(burst=1, window=60.0)
        self._resource_episode = 0  # waits since the last fetch that got its resources
        self.stats = DownloadStats()
        self.fatal: BaseException | None = None
        self._log = get_logger(component="downloads")

    # --- feeding the queue ----------------------------------------------------------------

    def load_pending(self) -> int:
        """Queue everything the ledger says is pending (after a restart: URLs unknown)."""
        return self.reload_pending()

    def reload_pending(self) -> int:
        """Queue the ledger's pending jobs this manager does not hold yet; returns how many.

        Cheap to call at any time (the end of a `--once` pass, a timer): jobs already queued,
        parked or downloading keep their URL, backoff and counts.
        """
        count = 0
        for row in self._state.pending_attachments():
            key = (row.session_id, row.message_id, row.attachment_id)
            if key in self._jobs or key in self._active:
                continue
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
                    job.url, job.fresh = att.download_url, False
                    job.exp = claims.exp if claims else None
                    job.dig = claims.dig if claims else None
                self._push(job)
        await self.wait_for_capacity()

    def _push(self, job: Job) -> bool:
        if job.key in self._active:
            return False
        fresh = job.key not in self._jobs
        self._jobs[job.key] = job
        if job.not_before > self._clock():
            # Apart from the ready jobs: a job parked for an hour must not hold up the queue.
            heapq.heappush(self._later, (job.not_before, next(self._counter), job.key))
        else:
            deadline = job.exp if job.exp is not None else 0.0  # unknown URL: refresh first
            heapq.heappush(self._heap, (deadline, next(self._counter), job.key))
        self._wakeup.set()
        return fresh

    # --- state for the supervisor, metrics and --once ------------------------------------

    @property
    def depth(self) -> int:
        return len(self._jobs)

    def idle(self) -> bool:
        """Nothing queued, nothing downloading, and nothing pending in the ledger: `--once`
        must not end while a job written behind our back waits there."""
        if self._jobs or self._active:
            return False
        if self._state is not None and self._state.pending_attachments(limit=1):
            self._reload_now.set()  # load it now rather than at the next tick
            return False
        return True

    def settled_for_once(self, park_limit: float, min_parkings: int = 6) -> bool:
        """`--once` may end its pass: nothing left to do (`idle`), or every job, the ledger's
        too, is parked with no progress coming soon (`stalled`); the pass then reports the
        pending attachments as incomplete instead of waiting for ever."""
        if self.idle():
            return True
        self.reload_pending()  # a job in the ledger that is not queued yet is not stalled
        return self.stalled(min_parkings, park_limit) is not None

    @property
    def parked(self) -> int:
        """Jobs waiting after a try that brought no file (a refused refresh, a file host
        failure, a refused URL)."""
        return sum(1 for job in self._jobs.values() if job.parked is not None)

    def stalled(self, min_parkings: int = 3, park_limit: float | None = None) -> Stalled | None:
        """Not None when nothing is downloading and every queued job is parked, each with at
        least `min_parkings` tries in a row without a file or (given `park_limit`) not to be
        tried again for longer than `park_limit` seconds (a spent daily budget): no progress
        is coming soon (see `Stalled`)."""
        if self._active or not self._jobs:
            return None
        jobs = list(self._jobs.values())
        now = self._clock()

        def hopeless(job: Job) -> bool:
            if job.parked is None:
                return False
            far = park_limit is not None and job.not_before - now > park_limit
            return job.parkings >= min_parkings or far

        if not all(hopeless(job) for job in jobs):
            return None
        reasons: dict[str, int] = {}
        for job in jobs:
            reasons[job.parked or ""] = reasons.get(job.parked or "", 0) + 1
        return Stalled(len(jobs), reasons, tuple(sorted(self._jobs))[:3])

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
            group.create_task(self._reload_loop(stop))

    async def _wake_on(self, stop: asyncio.Event) -> None:
        """Idle workers sleep until a job comes (no polling); stopping must wake them too."""
        await stop.wait()
        self._wakeup.set()
        self._reload_now.set()

    async def _reload_loop(self, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_now.wait(), self._reload_interval)
            self._reload_now.clear()
            if stop.is_set():
                return
            added = self.reload_pending()
            if added:
                self.stats.reloaded += added
                self._log.info("download_jobs_reloaded", added=added)

    async def _next_job(self, stop: asyncio.Event) -> Job | None:
        while not stop.is_set():
            now = self._clock()
            while self._later and self._later[0][0] <= now:
                _, _, key = heapq.heappop(self._later)
                job = self._jobs.get(key)
                if job is not None and key not in self._active:
                    deadline = job.exp if job.exp is not None else 0.0
                    heapq.heappush(self._heap, (deadline, next(self._counter), key))
            while self._heap:
                _, _, key = heapq.heappop(self._heap)
                job = self._jobs.get(key)
                # Stale entries: done, taken by another worker, or sent to wait since.
                if job is None or key in self._active or job.not_before > now:
                    continue
                self._active.add(key)
                return job
            self._wakeup.clear()
            timeout = None  # nothing queued: wait for _push or stop
            if self._later:  # the first waiting job's backoff (not_before) ends then
                timeout = min(MAX_IDLE_WAIT, max(0.01, self._later[0][0] - now))
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
        if (job.url is None or self._expiring(job)) and not await self._refresh(job):
            return
        started = time.monotonic()
        try:
            fetched = await self._fetcher.fetch(job.url or "", expected_size=job.size, dig=job.dig)
        except FetchError as exc:
            if exc.resource:
                # Our descriptors or memory, not the attachment: wait, count nothing.
                self._wait_for_resources(job, exc.reason)
                return
            job.attempts += 1
            await self._fetch_failed(job, exc)
            return
        self._resources_back()
        elapsed = max(time.monotonic() - started, 1e-3)
        self._rate = (
            fetched.size / elapsed
            if self._rate == 0
            else (0.8 * self._rate + 0.2 * fetched.size / elapsed)
        )
        await self._store(job, fetched.path, fetched.sha256, fetched.size)

    async def _fetch_failed(self, job: Job, exc: FetchError) -> None:
        """What a failed fetch means for the job: evidence fails it, anything else parks it."""
        if exc.code in FINAL_CODES:
            await self._fail(job, exc.reason, exc.code)
            return
        if exc.evidence:
            # The file host's own refusal: a fresh URL may cure it (an expired JWT, a size
            # Zoom has since corrected), but only after a pause, and a fresh URL refused again
            # counts against the attachment.
            was_fresh = job.fresh
            job.url, job.fresh = None, False
            if was_fresh:
                job.refusals += 1
                if job.refusals >= MAX_REFRESHES:
                    await self._fail(
                        job,
                        f"download URL kept failing after refreshes: {exc.reason}",
                        "refreshes_exhausted",
                    )
                    return
            self._park_download(job, URL_REFUSED, exc.reason, PARK_BASE)
            return
        # No evidence against the file: a reset, a timeout, a short body, a 5xx or 429, a
        # gateway's page, a status or redirect we do not understand. Wait and try again, as
        # often as it takes; after a gateway's refusal, with a fresh URL (asked for then).
        job.failures += 1
        if exc.refresh or exc.code == "http_status":
            job.url, job.fresh = None, False
        self._park_download(job, FILE_HOST, exc.reason, RETRY_BASE)

    def _park_download(self, job: Job, why: str, reason: str, base: float) -> None:
        job.parkings += 1
        job.parked = why
        self.stats.parkings_by_reason[why] = self.stats.parkings_by_reason.get(why, 0) + 1
        job.not_before = self._clock() + park_delay(job.parkings, self._rng, base)
        self._log.info(
            "download_retry",
            session_id=job.session_id,
            message_id=job.message_id,
            attachment_id=job.attachment_id,
            why=why,
            reason=reason,
            attempts=job.attempts,
            parkings=job.parkings,
            wait=round(job.not_before - self._clock(), 1),
        )
        self._active.discard(job.key)
        self._push(job)

    def _wait_for_resources(self, job: Job, reason: str) -> None:
        """Our descriptors or memory ran out (a fetch, or the blob commit after it): the job
        waits and tries again, counting nothing against the attachment. Counted exactly
        (`stats.resource_waits`, a metric), logged once per minute of the episode."""
        job.parkings += 1
        job.not_before = self._clock() + park_delay(job.parkings, self._rng)
        self.stats.resource_waits += 1
        self._resource_episode += 1
        admit, suppressed = self._resource_log.admit()
        if admit:
            self._log.warning(
                "download_waits_for_resources",
                session_id=job.session_id,
                message_id=job.message_id,
                attachment_id=job.attachment_id,
                reason=reason,
                wait=round(job.not_before - self._clock(), 1),
                waits_in_episode=self._resource_episode,
                suppressed=suppressed,  # other jobs' waits not logged since the last line
            )
        self._active.discard(job.key)
        self._push(job)

    def _resources_back(self) -> None:
        if self._resource_episode:
            self._log.info("download_resources_back", waits=self._resource_episode)
            self._resource_episode = 0

    def _park(self, job: Job, action: Action, exc: ZoomError) -> None:
        """No evidence against the job: wait and try again, however often (no failure)."""
        job.parkings += 1
        job.parked = action.value
        self.stats.parkings_by_reason[action.value] = (
            self.stats.parkings_by_reason.get(action.value, 0) + 1
        )
        not_before = self._clock() + park_delay(job.parkings, self._rng)
        if isinstance(exc, BudgetExhausted):
            not_before = max(not_before, exc.resume_at)  # the label's pause, to the second
        job.not_before = not_before
        self._log.info(
            "download_parked",
            session_id=job.session_id,
            message_id=job.message_id,
            attachment_id=job.attachment_id,
            reason=action.value,
            parkings=job.parkings,
            wait=round(not_before - self._clock(), 1),
        )
        self._active.discard(job.key)
        self._push(job)

    def _expiring(self, job: Job) -> bool:
        return job.exp is not None and job.exp - self._clock() < self._config.refresh_margin

    async def _refresh(self, job: Job) -> bool:
        """Fetch a fresh URL from the message endpoint. False when the job is settled or
        parked (it comes back later)."""
        try:
            record = await self._client.get_message(job.session_id, job.message_id)
        except ZoomError as exc:
            action = action_of(exc)
            if action is Action.SESSION_GONE:
                await self._fail(job, "message gone upstream", "message_gone")
            else:
                self._park(job, action, exc)
            return False
        job.refreshes += 1
        self.stats.refreshes += 1
        job.parked = None  # moving again; `parkings` counts on until a file comes
        for att in attachments_of(record):
            if att.attachment_id != job.attachment_id:
                continue
            if not att.download_url:
                # Listed, so not gone: only its URL is missing (absent or ""). Ask again later.
                job.url, job.fresh = None, False
                self._park_download(
                    job,
                    NO_URL,
                    "the message lists the attachment without a download_url",
                    PARK_BASE,
                )
                return False
            claims = jwt_claims(att.download_url)
            job.url, job.exp, job.dig = att.download_url, claims.exp, claims.dig
            job.fresh = True
            if att.size is not None:
                job.size = att.size
            return True
        # Only the attachment id missing from the message's record is evidence it is gone.
        await self._fail(job, "attachment gone upstream", "attachment_gone")
        return False

    async def _store(self, job: Job, tmp: Path, sha256: str, size: int) -> None:
        try:
            blob = await commit_blob(self._root, tmp, sha256)
        except OSError as exc:
            if is_resource_exhaustion(exc):
                # Our descriptors or memory, not the disk: the fetched file goes (unlink needs
                # no descriptor) and the job waits like a fetch that could not start. Had the
                # rename happened, the next commit finds the blob and fsyncs its folder.
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(tmp.unlink, missing_ok=True)
                self._wait_for_resources(
                    job, f"cannot move a download into blobs/: {exc.strerror or exc}"
                )
                return
            raise StorageError(
                f"cannot move a download into blobs/: {exc.strerror or exc}"
            ) from exc
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

    async def _fail(self, job: Job, reason: str, code: str) -> None:
        """The `attachment_failed` line with `reason` in full; metrics count `code` (one of
        fetch.CODES), so no host name or size becomes a label value."""
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
        self.stats.failures_by_reason[code] = self.stats.failures_by_reason.get(code, 0) + 1
        self._log.warning(
            "attachment_failed",
            session_id=job.session_id,
            message_id=job.message_id,
            attachment_id=job.attachment_id,
            reason=reason,
        )
