"""How the daemon runs the replicator: two context managers, so daemon.py needs a few lines.

    async with replica_bucket(config) as bucket:        # before ROOT opens: refusals exit 2
        drain = ReplicaDrain(config, once=once)
        async with open_archive(config, after_stop=drain):  # drain() after the last line
            async with replica_task(config, bucket, state, writer) as drain.replicator:
                ... supervise ...
    drain.verdict                                        # --once: "" or how far behind

Both are no-ops (yield None) when `replica.enabled` is false, and so is the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from archiver.config import Config, read_s3_secret
from archiver.ops.logs import get_logger
from archiver.replica.bucket import check_bucket, describe, is_transient, open_client
from archiver.replica.replicator import Replicator

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from archiver.store.state import State
    from archiver.store.writer import ManifestWriter

# How long `run --once` waits for the bucket after the pass: a slow bucket must not hold the
# pass for ever (it exits 1 saying how far behind the bucket is).
ONCE_WAIT_MIN: Final = 60.0
# The start-up check's total deadline: a bucket slower than this (a byte every few seconds
# keeps every socket read within read_timeout) is "unreachable now, checked later": ROOT
# opens and archiving goes on.
CHECK_TIMEOUT: Final = 15.0


def once_wait(config: Config) -> float:
    return max(ONCE_WAIT_MIN, 5 * config.replica.max_lag)


async def once_verdict(config: Config, replicator: Replicator | None) -> str:
    """`run --once`: "" once the bucket holds every durable line (and its blobs and
    checkpoints), else `replica N lines / B bytes behind` after waiting `once_wait`."""
    if replicator is None:
        return ""
    if await replicator.catch_up(time.monotonic() + once_wait(config)):
        return ""
    return replicator.behind()


@dataclass
class ReplicaDrain:
    """`run --once`: called once the run's last lines (its `stop` event, the closing
    checkpoint) are durable and ROOT is still locked, so a pass that exits 0 has everything,
    those lines too, in the bucket. The task has stopped by then: this is the only uploader."""

    config: Config
    once: bool
    replicator: Replicator | None = None
    verdict: str = ""  # "" or `replica N lines / B bytes behind`

    async def __call__(self) -> None:
        if self.once:
            self.verdict = await once_verdict(self.config, self.replicator)


@dataclass(frozen=True)
class Bucket:
    s3: S3Client
    checked: bool  # False: unreachable at start; the task checks it before the first upload


@contextlib.asynccontextmanager
async def replica_bucket(config: Config) -> AsyncIterator[Bucket | None]:
    """The S3 client, after the start-up check (ReplicaBucketError: exit 2 with the fix)."""
    if not config.replica.enabled:
        yield None
        return
    secret = read_s3_secret(config)
    async with open_client(config.replica, secret) as s3:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                warnings = await check_bucket(s3, config.replica)
            for warning in warnings:
                get_logger(component="replica").warning("replica_bucket_warning", warning=warning)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # Unreachable now: archive anyway; the task checks the bucket once it answers.
            get_logger(component="replica").warning(
                "replica_bucket_unreachable", reason=describe(exc)
            )
            yield Bucket(s3, checked=False)
            return
        yield Bucket(s3, checked=True)


@contextlib.asynccontextmanager
async def replica_task(
    config: Config, bucket: Bucket | None, state: State, writer: ManifestWriter
) -> AsyncIterator[Replicator | None]:
    if bucket is None:
        yield None
        return
    replicator = Replicator(
        config.replica,
        config.root,
        bucket.s3,
        state=state,
        durable_seq=lambda: writer.seq,
        checked=bucket.checked,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(replicator.run(stop))
    try:
        yield replicator
    finally:
        stop.set()
        # The task only waits on the bucket: give an upload in flight a moment, then cancel.
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not task.cancelled() and task.exception() is not None:
            get_logger(component="replica").error(
                "replica_task_failed", error=type(task.exception()).__name__
            )
