"""`run`: open the archive, talk to Zoom, supervise until done (--once) or told to stop.

Shutdown is two-phase (as in saq): the signal handler only sets an Event; the supervisor stops
taking work and in-flight steps get `sync.shutdown_grace` seconds to finish their page; what
is still running after that is cancelled — safe, because a page's token is saved only after
the page is durable, so an abandoned page is simply fetched again next time. Then the
manifest writer flushes, the state closes and the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp

from archiver import __version__
from archiver.config import (
    Config,
    parse_listen,
    read_client_secret,
    read_webhook_secret,
    validate_for_run,
)
from archiver.downloads.fetch import Fetcher, download_session
from archiver.downloads.manager import DownloadManager
from archiver.downloads.urls import UrlPolicy
from archiver.errors import ConfigError
from archiver.ops.logs import get_logger
from archiver.ops.metrics import Telemetry, start_server
from archiver.ops.progress import progress_loop, snapshot
from archiver.ops.sdnotify import Notifier, StartupProgress, watchdog_loop
from archiver.ops.status import META_BUDGET
from archiver.replica.service import ReplicaDrain, replica_bucket, replica_task
from archiver.store import checkpoint
from archiver.store.checkpointer import checkpoints, load_signer
from archiver.store.layout import prepare_root
from archiver.store.lock import ArchiveLock
from archiver.store.recovery import check_startup
from archiver.store.state import State
from archiver.store.stateview import META_CLEAN_STOP
from archiver.store.writer import ManifestWriter
from archiver.sync.session import SessionSync
from archiver.sync.supervisor import PARK_LIMIT_ONCE, Supervisor
from archiver.webhook.gate import SessionGate
from archiver.webhook.receiver import serve_webhooks
from archiver.zoom.auth import TokenProvider
from archiver.zoom.client import ZoomClient
from archiver.zoom.ratelimit import Budgets

# After the grace period, cancelled tasks get this long to unwind before we give up on them.
HARD_DEADLINE = 5.0
INCOMPLETE_SHOWN = 3  # sessions named in the one-line summary of an incomplete pass
# Why a pending download is parked (policy.Action values and the file host's), for that summary.
PARKED_BECAUSE = {
    "park": "URL refresh waits for a paused rate budget",
    "retry": "URL refresh failed: Zoom kept erring",
    "session_failure": "URL refresh refused for that session",
    "bad_response": "URL refresh got unreadable answers",
    "file_host": "the file host kept failing",  # downloads: no file, no evidence either
    "url_refused": "the file host refused fresh URLs",
}


@dataclass
class RunOutcome:
    ok: bool
    failed_sessions: dict[str, str]
    new_messages: int
    changed_messages: int
    attachments: int = 0
    attachments_failed: int = 0
    requests: int = 0
    # --once: what kept the pass from being complete (session id or `<discovery>` -> why)
    incomplete: dict[str, str] = field(default_factory=dict)
    attachments_pending: int = 0
    downloads_parked: dict[str, int] = field(default_factory=dict)  # why, for the pending
    replica_behind: str = ""  # --once with [replica]: how far the bucket is behind, if it is

    def summary(self) -> str:
        """One line saying what is incomplete: counts, the first few session ids, reasons."""
        parts = []
        if self.incomplete:
            shown = list(self.incomplete.items())[:INCOMPLETE_SHOWN]
            detail = "; ".join(f"{sid}: {why}" for sid, why in shown)
            more = len(self.incomplete) - len(shown)
            parts.append(
                f"{len(self.incomplete)} session(s) incomplete ({detail}"
                + (f"; and {more} more, see `status`" if more > 0 else "")
                + ")"
            )
        if self.attachments_pending:
            why = ", ".join(
                f"{n} {PARKED_BECAUSE.get(reason, reason)}"
                for reason, n in sorted(self.downloads_parked.items())
            )
            parts.append(
                f"{self.attachments_pending} attachment(s) still pending"
                + (f" (parked: {why})" if why else "")
            )
        if self.replica_behind:
            parts.append(self.replica_behind)
        return "pass incomplete: " + ", ".join(parts) if parts else "pass complete"


@contextlib.asynccontextmanager
async def open_archive(
    config: Config, *, after_stop: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[tuple[State, ManifestWriter]]:
    """Lock the root, check the manifest, open state and writer; record start and stop;
    sign checkpoints while open (store/checkpointer.py). `after_stop` runs once the stop
    line and the closing checkpoint are durable, ROOT still locked (the replica's drain)."""
    root = config.root
    key = load_signer(config)  # a bad key is a configuration error, before anything opens
    with ArchiveLock(root):
        # Read-only, before anything else is written to ROOT: damage that is not a torn
        # final line stops the start here and leaves the archive exactly as it was found.
        # With a key, the newest note it signed must agree with the manifest.
        origin = checkpoint.origin_for(config.zoom.account_id)
        public = key.public_key() if key is not None else None
        # Under systemd a big manifest's check asks for more time as it goes (and says how
        # far it got), so TimeoutStartSec= does not kill a start that is making progress.
        heartbeat = StartupProgress(Notifier(), "checking the manifest")
        tail = await asyncio.to_thread(
            check_startup, root, public, origin, progress=heartbeat, starting=True
        )
        prepare_root(root)  # after the lock: it empties tmp/, which a running daemon uses
        state = State.open(root)
        try:
            # Given what the check found, the writer reads only what follows the state.
            writer = await ManifestWriter.open(
                root, state, checked=tail.checked, progress=heartbeat
            )
            try:
                await writer.append_event("start", version=__version__)
                async with checkpoints(config, key, writer):
                    yield state, writer
                    stop = await writer.append_event("stop")
                    state.set_meta(META_CLEAN_STOP, str(stop))  # nothing but start-up follows
                if after_stop is not None:
                    await after_stop()
            finally:
                await writer.close()
        finally:
            state.close()


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def run(  # noqa: PLR0915 - the run's wiring in one place; each part is its own module
    config: Config,
    *,
    once: bool,
    stop: asyncio.Event | None = None,
    progress_stream: TextIO | None = None,
) -> RunOutcome:
    validate_for_run(config)
    secret = read_client_secret(config)
    # Before the archive opens, so a missing secret is a config error (exit 2), not a half run.
    # Not with --once: a receiver that is gone a moment later would only make Zoom retry.
    webhook_secret = read_webhook_secret(config) if config.webhook.enabled and not once else None
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    log = get_logger(component="daemon")
    notifier = Notifier()
    telemetry = Telemetry(poll_interval=config.sync.poll_interval)
    async with contextlib.AsyncExitStack() as stack:
        if config.metrics.listen:
            host, port = parse_listen(config.metrics.listen, "metrics.listen")
            try:
                runner = await start_server(telemetry, host, port)
            except OSError as exc:  # in use, not an address of this host, no such interface
                raise ConfigError(
                    f"cannot listen on {config.metrics.listen}: {exc.strerror or exc}",
                    file=config.source,
                    key="metrics.listen",
                ) from None
            stack.push_async_callback(runner.cleanup)
        # Before ROOT opens: a bucket without Object Lock, or a refused key, is exit 2.
        bucket = await stack.enter_async_context(replica_bucket(config))
        drain = ReplicaDrain(config, once=once)  # --once: the bucket gets the stop line too
        state, writer = await stack.enter_async_context(open_archive(config, after_stop=drain))
        telemetry.writer, telemetry.archive_open = writer, True
        telemetry.replica = drain.replicator = await stack.enter_async_context(
            replica_task(config, bucket, state, writer)
        )
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, limit_per_host=32), trust_env=False
            )
        )
        auth = TokenProvider(
            http,
            oauth_url=config.zoom.oauth_url,
            api_url=config.zoom.api_url,
            account_id=config.zoom.account_id,
            client_id=config.zoom.client_id,
            client_secret=secret,
        )
        await auth.token()
        budgets = Budgets(config.rate_limits)
        client = ZoomClient(http, auth, budgets)
        policy = UrlPolicy(
            allowed_schemes=config.downloads.allowed_schemes,
            allowed_hosts=config.downloads.allowed_hosts,
            allow_private_addresses=config.downloads.allow_private_addresses,
        )
        files = await stack.enter_async_context(
            download_session(policy, config.downloads.workers * 2)
        )
        fetcher = Fetcher(
            files,
            policy,
            tmp_dir=config.root / "tmp",
            max_bytes=config.downloads.max_bytes,
            concurrency=config.downloads.workers,
            min_rate=config.downloads.min_rate,
        )
        stack.callback(fetcher.close)
        downloads = DownloadManager(
            config.downloads,
            config.root,
            state=state,
            writer=writer,
            client=client,
            fetcher=fetcher,
        )
        downloads.load_pending()
        # With webhooks on, sync and webhook writes of one session take turns (webhook/gate.py).
        archive = SessionGate(writer) if webhook_secret is not None else writer
        session_sync = SessionSync(
            client, archive, state, count=config.sync.count, on_archived=downloads.on_archived
        )
        # --once ends when downloads are done, or parked with no progress coming soon (the
        # pass then says which attachments are pending rather than waiting for ever).
        idle_check = (
            functools.partial(downloads.settled_for_once, PARK_LIMIT_ONCE)
            if once
            else downloads.idle
        )
        supervisor = Supervisor(
            config, client, state, session_sync, once=once, idle_check=idle_check
        )
        telemetry.supervisor, telemetry.downloads = supervisor, downloads
        telemetry.client, telemetry.budgets, telemetry.auth = client, budgets, auth
        if isinstance(archive, SessionGate) and webhook_secret is not None:
            # Entered last, so it stops taking events before downloads and the writer close.
            telemetry.webhooks = await stack.enter_async_context(
                serve_webhooks(
                    config,
                    webhook_secret,
                    archive=archive,
                    state=state,
                    downloads=downloads,
                    supervisor=supervisor,
                )
            )
        log.info("archiver_started", root=str(config.root), once=once)
        notifier.ready(f"archive open at seq {writer.seq}; token obtained")
        side_stop = asyncio.Event()
        side_tasks = [
            asyncio.create_task(watchdog_loop(notifier, side_stop)),
            asyncio.create_task(_status_loop(notifier, telemetry, state, side_stop)),
            asyncio.create_task(
                progress_loop(
                    telemetry,
                    side_stop,
                    stream=progress_stream if once else _NOT_A_TTY,
                    interval=10.0 if once else 60.0,
                )
            ),
        ]
        try:
            await _supervise(supervisor, downloads, stop, config.sync.shutdown_grace)
        finally:
            notifier.stopping("draining and closing the archive")
            side_stop.set()
            await asyncio.gather(*side_tasks, return_exceptions=True)
        progress = supervisor.progress
        # A pass is complete only on evidence: every known session synced to its listed time
        # with its walk ended, and no attachment without its line (DESIGN.md, invariant 8).
        incomplete = supervisor.incomplete() if once else dict(supervisor.failed_sessions)
        pending = state.attachment_counts()["pending"] if once else 0
        stalled = downloads.stalled(0) if once and pending else None
        log.info(
            "archiver_stopped",
            messages_new=progress.messages_new,
            messages_changed=progress.messages_changed,
            pages=progress.pages,
            requests=client.requests,
            failed_sessions=len(supervisor.failed_sessions),
            incomplete_sessions=len(incomplete),
            attachments=downloads.stats.done,
            attachments_failed=downloads.stats.failed,
            attachments_pending=pending,
        )
        outcome = RunOutcome(
            ok=not incomplete and not pending,
            failed_sessions=dict(supervisor.failed_sessions),
            new_messages=progress.messages_new,
            changed_messages=progress.messages_changed,
            attachments=downloads.stats.done,
            attachments_failed=downloads.stats.failed,
            requests=client.requests,
            incomplete=incomplete,
            attachments_pending=pending,
            downloads_parked=dict(stalled.reasons) if stalled else {},
        )
    return _with_replica(outcome, drain.verdict)


def _with_replica(outcome: RunOutcome, behind: str) -> RunOutcome:
    """The --once verdict with the replica's (known only once the archive has closed)."""
    if not behind:
        return outcome
    return dataclasses.replace(outcome, ok=False, replica_behind=behind)


class _NotATty(io.StringIO):
    """Progress of the daemon always goes to the log, never to bars."""

    def isatty(self) -> bool:
        return False


_NOT_A_TTY = _NotATty()


async def _status_loop(
    notifier: Notifier, telemetry: Telemetry, state: State, stop: asyncio.Event
) -> None:
    """systemd's STATUS= line, and the budget snapshot that `status` reads from the state."""
    while True:
        snap = snapshot(telemetry)
        notifier.status(
            f"{snap.messages} messages, {snap.attachments} attachments archived; "
            f"{snap.sessions_pending} sessions and {snap.attachments_queued} downloads pending"
        )
        if telemetry.budgets is not None:
            budget = {"at": time.time(), "labels": telemetry.budgets.snapshot()}
            state.set_meta(META_BUDGET, json.dumps(budget))
        if stop.is_set():
            return  # one last snapshot at shutdown, so `status` shows the final figures
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


async def _supervise(
    supervisor: Supervisor, downloads: DownloadManager, stop: asyncio.Event, grace: float
) -> None:
    sync_stop = asyncio.Event()
    download_stop = asyncio.Event()
    sync_task = asyncio.create_task(supervisor.run(sync_stop))
    download_task = asyncio.create_task(downloads.run(download_stop))
    stop_wait = asyncio.create_task(stop.wait())
    tasks = {sync_task, download_task}
    try:
        await asyncio.wait({*tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        # phase 1: take no new work; in-flight pages and downloads get the grace period
        sync_stop.set()
        download_stop.set()
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()  # phase 2: abandon the rest (pages are refetched, tmp/ cleaned)
        if pending:
            await asyncio.wait(pending, timeout=HARD_DEADLINE)
        # Raise the first error: both tasks usually carry the same StorageError.
        failures = _failures((sync_task, download_task))
        if failures:
            raise failures[0]
    except asyncio.CancelledError:
        # Cancelled from outside (asyncio.run on Ctrl-C, a caller's timeout): the sync and
        # download tasks end here, before the archive they write to closes, not as orphans.
        sync_stop.set()
        download_stop.set()
        for task in tasks:
            task.cancel()
        await _outlast(tasks, HARD_DEADLINE)
        log = get_logger(component="daemon")
        for task in tasks:
            if not task.done():
                log.error("shutdown_task_left_running", task=task.get_name())
        # An error (a StorageError, say) that ended a task before the cancel came: said here,
        # not hidden behind the cancellation.
        for error in _failures((sync_task, download_task)):
            log.error("run_failed_before_cancel", error=str(error), error_type=type(error).__name__)
        raise
    finally:
        stop_wait.cancel()


async def _outlast(tasks: set[asyncio.Task[None]], deadline: float) -> None:
    """Wait up to `deadline` s for the tasks to end, through further cancellations of our own
    task (a second Ctrl-C, an outer timeout): they must not outlive the archive they write."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    pending = {task for task in tasks if not task.done()}
    while pending and (left := until - loop.time()) > 0:
        try:
            _, pending = await asyncio.wait(pending, timeout=left)
        except asyncio.CancelledError:
            continue  # the caller re-raises the first cancellation once these have ended


def _failures(tasks: Iterable[asyncio.Task[None]]) -> list[BaseException]:
    """The errors that ended these tasks, unwrapped, in order. Every finished task's exception
    is retrieved, so asyncio prints none of them as unretrieved at exit."""
    errors = (task.exception() for task in tasks if task.done() and not task.cancelled())
    return [_unwrap(exc) for exc in errors if exc is not None]


def _unwrap(exc: BaseException) -> BaseException:
    """TaskGroup wraps failures in ExceptionGroup; surface the archiver's own error."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def run_command(config: Config, *, once: bool) -> int:
    outcome = asyncio.run(run(config, once=once))
    if not outcome.ok:
        log = get_logger(component="daemon")
        for session_id, error in outcome.incomplete.items():
            log.error("session_incomplete", session_id=session_id, error=error)
        # One line for the operator (the log has every session); the CLI's own voice.
        sys.stderr.write(f"zoom-sms-archiver: {outcome.summary()}\n")
        return 1
    return 0
