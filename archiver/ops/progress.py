"""Progress for long work: rich progress bars on a TTY, periodic structured log lines off it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from archiver.ops.logs import get_logger
from archiver.ops.metrics import Telemetry


@dataclass(frozen=True)
class Snapshot:
    sessions_discovered: int
    sessions_done: int
    sessions_pending: int
    messages: int
    attachments: int
    attachments_failed: int
    attachments_queued: int
    bytes: int
    requests: int
    budget: str  # configured requests/s per label, e.g. "light 10/s, medium 5/s"


def snapshot(t: Telemetry) -> Snapshot:
    progress = t.supervisor.progress if t.supervisor else None
    stats = t.downloads.stats if t.downloads else None
    budget = "unlimited"
    if t.budgets is not None:
        rates = {
            label: values.get("configured_rate")
            for label, values in t.budgets.snapshot().items()
            if values.get("requests")
        }
        known = [f"{label} {rate:g}/s" for label, rate in rates.items() if rate is not None]
        budget = ", ".join(known) if known else "unlimited"
    return Snapshot(
        sessions_discovered=progress.sessions_discovered if progress else 0,
        sessions_done=progress.sessions_done if progress else 0,
        sessions_pending=t.supervisor.pending if t.supervisor else 0,
        messages=progress.messages_new + progress.messages_changed if progress else 0,
        attachments=stats.done if stats else 0,
        attachments_failed=stats.failed if stats else 0,
        attachments_queued=t.downloads.depth if t.downloads else 0,
        bytes=stats.bytes if stats else 0,
        requests=t.client.requests if t.client else 0,
        budget=budget,
    )


async def progress_loop(
    telemetry: Telemetry,
    stop: asyncio.Event,
    *,
    stream: TextIO | None = None,
    interval: float = 10.0,
) -> None:
    out = stream or sys.stderr
    if out.isatty():
        await _bars(telemetry, stop, Console(file=out))
    else:
        await _log_lines(telemetry, stop, interval)


async def _log_lines(telemetry: Telemetry, stop: asyncio.Event, interval: float) -> None:
    log = get_logger(component="progress")
    last_requests, last_time = 0, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        snap = snapshot(telemetry)
        now = time.monotonic()
        rate = (snap.requests - last_requests) / max(now - last_time, 1e-6)
        last_requests, last_time = snap.requests, now
        log.info(
            "progress",
            sessions_discovered=snap.sessions_discovered,
            sessions_pending=snap.sessions_pending,
            messages=snap.messages,
            attachments=snap.attachments,
            attachments_failed=snap.attachments_failed,
            attachments_queued=snap.attachments_queued,
            bytes=snap.bytes,
            api_rate=round(rate, 2),
            api_budget=snap.budget,
        )


async def _bars(telemetry: Telemetry, stop: asyncio.Event, console: Console) -> None:
    columns: list[Any] = [
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bars:
        tasks = _Tasks(
            sessions=bars.add_task("sessions", total=None, extra=""),
            messages=bars.add_task("messages", total=None, extra=""),
            attachments=bars.add_task("attachments", total=None, extra=""),
            api=bars.add_task("api", total=None, extra=""),
        )
        last_requests, last_time = 0, time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            snap = snapshot(telemetry)
            now = time.monotonic()
            rate = (snap.requests - last_requests) / max(now - last_time, 1e-6)
            last_requests, last_time = snap.requests, now
            _update(bars, tasks, snap, rate)


@dataclass(frozen=True)
class _Tasks:
    sessions: TaskID
    messages: TaskID
    attachments: TaskID
    api: TaskID


def _update(bars: Progress, tasks: _Tasks, snap: Snapshot, rate: float) -> None:
    total_sessions = max(snap.sessions_discovered, snap.sessions_done + snap.sessions_pending)
    bars.update(
        tasks.sessions, total=total_sessions or None, completed=snap.sessions_done, extra=""
    )
    bars.update(tasks.messages, completed=snap.messages, extra="archived")
    bars.update(
        tasks.attachments,
        total=snap.attachments + snap.attachments_failed + snap.attachments_queued or None,
        completed=snap.attachments + snap.attachments_failed,
        extra=f"{snap.bytes / 1048576:.1f} MiB, {snap.attachments_failed} failed",
    )
    bars.update(tasks.api, completed=snap.requests, extra=f"{rate:.1f} req/s ({snap.budget})")
