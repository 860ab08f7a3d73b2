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
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from archiver import __version__
from archiver.config import Config, read_client_secret, validate_for_run
from archiver.downloads.fetch import Fetcher, download_session
from archiver.downloads.manager import DownloadManager
from archiver.downloads.urls import UrlPolicy
from archiver.errors import ArchiverError
from archiver.ops.logs import get_logger
from archiver.store.layout import prepare_root
from archiver.store.lock import ArchiveLock
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from archiver.sync.session import SessionSync
from archiver.sync.supervisor import Supervisor
from archiver.zoom.auth import TokenProvider
from archiver.zoom.client import ZoomClient
from archiver.zoom.ratelimit import Budgets

# After the grace period, cancelled tasks get this long to unwind before we give up on them.
HARD_DEADLINE = 5.0


@dataclass
class RunOutcome:
    ok: bool
    failed_sessions: dict[str, str]
    new_messages: int
    changed_messages: int


@contextlib.asynccontextmanager
async def open_archive(config: Config) -> AsyncIterator[tuple[State, ManifestWriter]]:
    """Lock the root, repair a torn tail, open state and writer; record start and stop."""
    root = config.root
    prepare_root(root)
    with ArchiveLock(root):
        state = State.open(root)
        try:
            writer = await ManifestWriter.open(root, state)
            try:
                await writer.append_event("start", version=__version__)
                yield state, writer
                await writer.append_event("stop")
            finally:
                await writer.close()
        finally:
            state.close()


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def run(config: Config, *, once: bool, stop: asyncio.Event | None = None) -> RunOutcome:
    validate_for_run(config)
    secret = read_client_secret(config)
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    log = get_logger(component="daemon")
    async with open_archive(config) as (state, writer):
        connector = aiohttp.TCPConnector(limit=64, limit_per_host=32)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:
            auth = TokenProvider(
                http,
                oauth_url=config.zoom.oauth_url,
                api_url=config.zoom.api_url,
                account_id=config.zoom.account_id,
                client_id=config.zoom.client_id,
                client_secret=secret,
            )
            await auth.token()
            client = ZoomClient(http, auth, Budgets(config.rate_limits))
            policy = UrlPolicy(
                allowed_schemes=config.downloads.allowed_schemes,
                allowed_hosts=config.downloads.allowed_hosts,
                allow_private_addresses=config.downloads.allow_private_addresses,
            )
            async with download_session(policy, config.downloads.workers * 2) as files:
                fetcher = Fetcher(
                    files, policy, tmp_dir=config.root / "tmp", max_bytes=config.downloads.max_bytes
                )
                downloads = DownloadManager(
                    config.downloads,
                    config.root,
                    state=state,
                    writer=writer,
                    client=client,
                    fetcher=fetcher,
                )
                downloads.load_pending()
                session_sync = SessionSync(
                    client,
                    writer,
                    state,
                    count=config.sync.count,
                    on_archived=downloads.on_archived,
                )
                supervisor = Supervisor(
                    config, client, state, session_sync, once=once, idle_check=downloads.idle
                )
                log.info("archiver_started", root=str(config.root), once=once)
                await _supervise(supervisor, downloads, stop, config.sync.shutdown_grace)
            progress = supervisor.progress
            log.info(
                "archiver_stopped",
                messages_new=progress.messages_new,
                messages_changed=progress.messages_changed,
                pages=progress.pages,
                requests=client.requests,
                failed_sessions=len(supervisor.failed_sessions),
                attachments=downloads.stats.done,
                attachments_failed=downloads.stats.failed,
            )
            return RunOutcome(
                ok=not supervisor.failed_sessions,
                failed_sessions=dict(supervisor.failed_sessions),
                new_messages=progress.messages_new,
                changed_messages=progress.messages_changed,
            )


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
        for task in (sync_task, download_task):
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    raise _unwrap(exc)
    finally:
        stop_wait.cancel()


def _unwrap(exc: BaseException) -> BaseException:
    """TaskGroup wraps failures in ExceptionGroup; surface the archiver's own error."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def run_command(config: Config, *, once: bool) -> int:
    try:
        outcome = asyncio.run(run(config, once=once))
    except ArchiverError:
        raise
    if not outcome.ok:
        log = get_logger(component="daemon")
        for session_id, error in outcome.failed_sessions.items():
            log.error("session_incomplete", session_id=session_id, error=error)
        return 1
    return 0
