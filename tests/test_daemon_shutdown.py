"""How `_supervise` ends its two tasks: the sync supervisor and the download queue.

Stand-ins with the one method `_supervise` calls (`run(stop)`) drive the orderings that a
whole run reaches only by chance: a task that failed before a cancellation came."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from archiver import daemon
from archiver.errors import StorageError


class _Fails:
    async def run(self, stop: asyncio.Event) -> None:
        raise StorageError("disk full while writing the manifest")


class _WindsDown:
    """Ends when told to stop, after `linger` seconds of finishing in-flight work."""

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self.ended = False

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
            await asyncio.sleep(self.linger)
        finally:
            self.ended = True


async def test_an_error_before_the_cancel_is_logged_not_hidden_by_it() -> None:
    downloads = _WindsDown(linger=30)  # still in its grace period when the cancel comes
    with capture_logs() as logs:
        task = asyncio.create_task(
            daemon._supervise(_Fails(), downloads, asyncio.Event(), grace=60)  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert downloads.ended, "the download task must end with the run"
    failed = [e for e in logs if e["event"] == "run_failed_before_cancel"]
    assert [(e["error_type"], e["log_level"]) for e in failed] == [("StorageError", "error")]
    assert "disk full" in failed[0]["error"]
    assert not [e for e in logs if e["event"] == "shutdown_task_left_running"]


async def test_without_a_cancel_the_first_error_is_raised_after_the_other_task_ends() -> None:
    downloads = _WindsDown(linger=0.1)
    with pytest.raises(StorageError, match="disk full"):
        await daemon._supervise(_Fails(), downloads, asyncio.Event(), grace=60)  # type: ignore[arg-type]
    assert downloads.ended


class _IgnoresCancel:
    """A task stuck in a thread or a misbehaving library: it outlasts its cancellation."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)  # swallows the cancel and lingers past the deadline
        finally:
            self.ended.set()


async def test_a_task_that_outlives_the_deadline_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "HARD_DEADLINE", 0.2)
    stuck = _IgnoresCancel()
    with capture_logs() as logs:
        task = asyncio.create_task(
            daemon._supervise(stuck, _WindsDown(linger=0), asyncio.Event(), grace=60)  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    left = [e for e in logs if e["event"] == "shutdown_task_left_running"]
    assert len(left) == 1 and left[0]["log_level"] == "error"
    await asyncio.wait_for(stuck.ended.wait(), 5)
