"""DownloadManager one try at a time (issue 17, survivors in manager.py).

A worker's loop, step by step: the next due job is taken from the queue (`_next_job`) and
tried (`_process`), with the manager's clock and jitter under the test's control, so each
parking's delay, each count and each line or log event can be checked exactly. Everything else
is real: the archive root, state, manifest writer, a ZoomClient and Fetcher talking to a
scripted loopback Zoom (tests/zoom/scripted.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from structlog.testing import capture_logs

from archiver.downloads import manager as manager_module
from archiver.downloads.fetch import Fetched, Fetcher, download_session
from archiver.downloads.manager import DownloadManager, Job
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from archiver.zoom.ratelimit import BudgetExhausted
from tests.downloads.rig import (
    FILE,
    LOCAL,
    file_sha256,
    local_downloads,
    local_fetcher,
    open_archive,
)
from tests.downloads.test_deadline import descriptors_exhausted
from tests.helpers import manifest_lines
from tests.zoom.scripted import SESSION, Reply, ScriptedZoom, client_for, record, scripted_zoom

T0 = 1_000_000.0  # the manager's clock: far from 0, so `wait` is told from `not_before`
JITTER = 0.37  # where in the jittered half of a backoff the delay falls
MISSING = object()


def delay(parkings: int, base: float = 1.0) -> float:
    """park_delay's schedule with JITTER: half the ceiling plus JITTER of the other half."""
    ceiling = min(manager_module.PARK_CAP, base * 2.0 ** max(parkings - 1, 0))
    return ceiling / 2 + JITTER * ceiling / 2


class Jitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a + JITTER * (b - a)


class PausedBudget:
    """The real client, behind a Heavy budget paused (as `Budgets.acquire` raises it) for the
    next `times` refreshes, until `resume_at` on the manager's clock."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.times = 0
        self.resume_at = 0.0

    async def get_message(self, session_id: str, message_id: str) -> Any:
        if self.times:
            self.times -= 1
            raise BudgetExhausted("heavy", self.resume_at, 3600.0, "daily_cap")
        return await self._client.get_message(session_id, message_id)


class WatchedFetcher:
    """The real fetcher; records what the manager says of its queue as each fetch starts."""

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher
        self.manager: DownloadManager | None = None
        self.seen: list[tuple[int, float | None, str | None]] = []  # parked, deadline, dig

    async def fetch(self, url: str, *, expected_size: int | None, dig: str | None) -> Fetched:
        assert self.manager is not None
        self.seen.append((self.manager.parked, self.manager.earliest_deadline(), dig))
        return await self._fetcher.fetch(url, expected_size=expected_size, dig=dig)


@dataclass
class Bench:
    root: Path
    state: State
    writer: ManifestWriter
    manager: DownloadManager
    zoom: ScriptedZoom
    client: PausedBudget
    fetcher: WatchedFetcher
    now: list[float]

    def lines(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in manifest_lines(self.root) if line["kind"] == kind]

    async def archive(self, message_id: str, **attachment: Any) -> dict[str, Any]:
        """A message with one attachment (its fields overridden by `attachment`), durable in
        the manifest with its ledger job, and listed by the scripted Zoom."""
        self.zoom.files[message_id] = FILE
        item = record(message_id, url=self.zoom.file_url(message_id, time.time() + 86_400))
        item["attachments"][0].update(attachment)
        self.zoom.messages = [m for m in self.zoom.messages if m["message_id"] != message_id]
        self.zoom.messages.append(item)
        await self.writer.append_messages(SESSION, [item], "sync")
        return item

    async def handed_over(self, message_id: str, **attachment: Any) -> None:
        """Archived by the sync path, which hands the job over with its URL."""
        item = await self.archive(message_id, **attachment)
        await self.manager.on_archived(SESSION, [item])

    async def step(self) -> Job:
        """One worker's try: the clock moves on to when the next job is due; that job is taken
        from the queue as a worker takes it, and tried."""
        self.now[0] = max(self.now[0], min(job.not_before for job in self.manager._jobs.values()))
        async with asyncio.timeout(5):
            job = await self.manager._next_job(asyncio.Event())
        assert job is not None
        try:
            await self.manager._process(job)
        finally:
            self.manager._active.discard(job.key)
        return job


@asynccontextmanager
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    now = [T0]
    async with (
        open_archive(tmp_path) as (root, state, writer),
        scripted_zoom() as zoom,
        client_for(zoom) as real_client,
        download_session(LOCAL, 4) as http,
    ):
        zoom.messages = []
        real_fetcher = local_fetcher(http, root)
        client = PausedBudget(real_client)
        fetcher = WatchedFetcher(real_fetcher)
        manager = DownloadManager(
            local_downloads(1),
            root,
            state=state,
            writer=writer,
            client=client,
            fetcher=fetcher,  # type: ignore[arg-type]
            clock=lambda: now[0],
            rng=Jitter(),
        )
        fetcher.manager = manager
        try:
            yield Bench(root, state, writer, manager, zoom, client, fetcher, now)
        finally:
            real_fetcher.close()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def fields(entry: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """`entry` cut to the keys of `expected` (a missing one shows as MISSING)."""
    return {key: entry.get(key, MISSING) for key in expected}


def ids(message_id: str, attachment_id: str | None = None) -> dict[str, str]:
    return {
        "session_id": SESSION,
        "message_id": message_id,
        "attachment_id": attachment_id or f"a-{message_id}",
    }


def token_url(zoom: ScriptedZoom, name: str, claims: dict[str, Any]) -> str:
    token = jwt.encode({"iss": "crossfile", "aud": "file", **claims}, "k" * 32)
    return f"{zoom.base}/file/{name}?jwt={token}"


# --- attachment_failed: the line, the log event, the counts ------------------------------


async def test_a_final_fetch_failure_writes_its_line_logs_it_and_counts_its_code(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path) as b:
        await b.handed_over("big", size=2_000_000)  # over max_bytes as advertised
        await b.handed_over("far", download_url="http://files.example.com/file/far?jwt=x")
        with capture_logs() as logs:
            big = await b.step()
            far = await b.step()
        assert {big.message_id, far.message_id} == {"big", "far"}
        lines = {line["message_id"]: line for line in b.lines("attachment_failed")}
        too_large = "advertised size 2000000 exceeds downloads.max_bytes"
        expected = {
            **ids("big"),
            "name": "a.png",
            "type": "PNG",
            "size": 2_000_000,
            "reason": too_large,
            "attempts": 1,
        }
        assert fields(lines["big"], expected) == expected
        refused = lines["far"]["reason"]
        assert isinstance(refused, str) and "files.example.com" in refused
        assert fields(lines["far"], ids("far")) == ids("far")
        assert (lines["far"]["size"], lines["far"]["attempts"]) == (None, 1)
        logged = {entry.get("message_id"): entry for entry in events(logs, "attachment_failed")}
        for message_id, reason in (("big", too_large), ("far", refused)):
            expected = {**ids(message_id), "reason": reason}
            assert fields(logged[message_id], expected) == expected
        assert (b.manager.stats.failed, b.manager.stats.failures_by_reason) == (
            2,
            {"too_large": 1, "url_refused": 1},
        )
        assert b.manager.depth == 0
        assert b.manager.idle()


async def test_every_failure_is_counted_under_its_own_code(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        for name in ("big1", "big2", "big3"):
            await b.handed_over(name, size=2_000_000)
        await b.handed_over("far", download_url="http://files.example.com/file/far?jwt=x")
        for _ in range(4):
            await b.step()
        assert len(b.lines("attachment_failed")) == 4
        assert b.manager.stats.failed == 4
        assert b.manager.stats.failures_by_reason == {"too_large": 3, "url_refused": 1}


@pytest.mark.parametrize(
    ("gone", "reason", "code"),
    [
        ("message", "message gone upstream", "message_gone"),  # Zoom's 12004
        ("attachment", "attachment gone upstream", "attachment_gone"),  # no longer listed
    ],
)
async def test_a_refresh_that_finds_the_job_gone_fails_it_under_its_code(
    tmp_path: Path, gone: str, reason: str, code: str
) -> None:
    async with bench(tmp_path) as b:
        await b.archive("m1")
        if gone == "message":
            b.zoom.messages = []
        else:
            b.zoom.messages = [record("m1")]
        assert b.manager.load_pending() == 1  # as after a restart: no URL
        with capture_logs() as logs:
            await b.step()
        [line] = b.lines("attachment_failed")
        assert (line["reason"], line["attempts"]) == (reason, 0)
        [entry] = events(logs, "attachment_failed")
        assert fields(entry, {**ids("m1"), "reason": reason}) == {**ids("m1"), "reason": reason}
        assert b.manager.stats.failures_by_reason == {code: 1}
        assert b.manager.stats.failed == 1


# --- parked after a fetch: download_retry ---------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "why", "reason", "base", "drops_url"),
    [
        # No evidence: the file host's 5xx keeps the URL, a status we do not understand
        # drops it; both wait RETRY_BASE.
        (Reply(503, b""), "file_host", "file host answered 503", "retry", False),
        (Reply(202, b""), "file_host", "file host answered 202", "retry", True),
        # The file host's own JSON 404: the URL goes, the wait is PARK_BASE.
        (
            Reply.json(404, {"code": 404, "message": "File does not exist."}),
            "url_refused",
            "file host answered 404",
            "park",
            True,
        ),
    ],
    ids=["503", "202", "json-404"],
)
async def test_a_failed_fetch_parks_the_job_and_logs_why_with_its_wait(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reply: Reply,
    why: str,
    reason: str,
    base: str,
    drops_url: bool,
) -> None:
    # Equal in production (1 s): told apart here so each schedule's own base is seen used.
    monkeypatch.setattr(manager_module, "RETRY_BASE", 2.0)
    monkeypatch.setattr(manager_module, "PARK_BASE", 1.0)
    seconds = {"retry": 2.0, "park": 1.0}[base]
    async with bench(tmp_path) as b:
        await b.handed_over("m1")
        b.zoom.then("file", reply)
        with capture_logs() as logs:
            job = await b.step()
        assert b.lines("attachment_failed") == []
        assert b.manager.depth == 1 and b.manager.parked == 1
        assert b.manager.stats.parkings_by_reason == {why: 1}
        assert job.not_before == pytest.approx(T0 + delay(1, seconds))
        assert (job.url is None) is drops_url
        [entry] = events(logs, "download_retry")
        expected = {
            **ids("m1"),
            "why": why,
            "reason": reason,
            "attempts": 1,
            "parkings": 1,
            "wait": {1.0: 0.7, 2.0: 1.4}[seconds],  # 0.685 s and 1.37 s, to a tenth
        }
        assert fields(entry, expected) == expected

        # The next try is due then, asks for a fresh URL only if the last one was dropped,
        # and its second parking doubles the wait.
        b.zoom.then("file", reply)
        asked = b.zoom.requests("get_message")
        with capture_logs() as logs:
            again = await b.step()
        assert again is job
        assert b.zoom.requests("get_message") - asked == int(drops_url)
        assert job.not_before == pytest.approx(b.now[0] + delay(2, seconds))
        [entry] = events(logs, "download_retry")
        assert (entry["attempts"], entry["parkings"]) == (2, 2)
        assert entry["wait"] == {1.0: 1.4, 2.0: 2.7}[seconds]  # 1.37 s and 2.74 s

        await b.step()  # the file host answers now
        [line] = b.lines("attachment")
        assert line["sha256"] == file_sha256()
        assert b.manager.depth == 0


async def test_a_listed_attachment_without_url_parks_with_its_reason_then_downloads(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path) as b:
        item = await b.archive("m1")
        listed = {**item, "attachments": [{**item["attachments"][0], "download_url": ""}]}
        b.zoom.then("get_message", Reply.json(200, listed))
        assert b.manager.load_pending() == 1
        with capture_logs() as logs:
            job = await b.step()
        [entry] = events(logs, "download_retry")
        expected = {
            **ids("m1"),
            "why": "no_url",
            "reason": "the message lists the attachment without a download_url",
            "attempts": 0,
            "parkings": 1,
            "wait": 0.7,
        }
        assert fields(entry, expected) == expected
        assert job.not_before == pytest.approx(T0 + delay(1))
        await b.step()  # a second refresh, with the URL this time
        assert len(b.lines("attachment")) == 1
        assert b.manager.stats.refreshes == 2
        assert b.manager.stats.parkings_by_reason == {"no_url": 1}


# --- parked after a refresh: download_parked ----------------------------------------------


async def test_a_paused_budget_parks_until_it_resumes_then_the_refresh_moves_the_job(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path) as b:
        exp = float(int(time.time()) + 86_400)
        await b.archive("m1", download_url=token_url(b.zoom, "m1", {"exp": exp}))
        b.client.times, b.client.resume_at = 1, T0 + 1234.56
        assert b.manager.load_pending() == 1  # as after a restart: no URL
        with capture_logs() as logs:
            job = await b.step()
        [entry] = events(logs, "download_parked")
        expected = {**ids("m1"), "reason": "park", "parkings": 1, "wait": 1234.6}
        assert fields(entry, expected) == expected
        assert job.not_before == pytest.approx(T0 + 1234.56)  # the budget's pause, not 0.685 s
        assert (b.manager.parked, b.manager.stats.refreshes) == (1, 0)
        assert b.manager.stats.parkings_by_reason == {"park": 1}

        await b.step()  # resumed: the refresh brings a URL and the job is moving again
        assert b.manager.stats.refreshes == 1
        # While it downloads it is parked no more (its `parkings` count on), and the URL's
        # expiry is known.
        assert b.fetcher.seen == [(0, exp, None)]
        assert job.parkings == 1
        assert len(b.lines("attachment")) == 1


async def test_a_refreshed_url_is_read_for_its_claims_and_its_attachment_found_among_others(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path) as b:
        exp = float(int(time.time()) + 86_400)
        dig = "ab" * 32  # not the file's sha256: the download says so in the manifest
        b.zoom.files["m1"] = FILE
        b.zoom.files["other"] = FILE[:100]
        item = record("m1", url=b.zoom.file_url("other", exp))
        item["attachments"][0]["id"] = "a-other"
        item["attachments"].append(
            {
                "id": "a-m1",
                "name": "a.png",
                "type": "PNG",
                "download_url": token_url(b.zoom, "m1", {"exp": exp, "dig": dig}),
            }
        )
        b.zoom.messages = [item]
        await b.writer.append_messages(SESSION, [item], "sync")
        assert b.manager.load_pending() == 2  # as after a restart: both need a fresh URL
        await b.step()
        await b.step()
        assert b.lines("attachment_failed") == []
        assert sorted(line["attachment_id"] for line in b.lines("attachment")) == [
            "a-m1",
            "a-other",
        ]
        [mismatch] = [x for x in b.lines("event") if x["event"] == "attachment_dig_mismatch"]
        expected = {**ids("m1"), "dig": dig, "sha256": file_sha256()}
        assert fields(mismatch, expected) == expected
        assert sorted(str(seen[2]) for seen in b.fetcher.seen) == sorted([dig, "None"])
        assert b.manager.stats.refreshes == 2


# --- out of descriptors: download_waits_for_resources --------------------------------------


async def test_resource_waits_back_off_per_job_and_log_the_first_with_its_ids(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path) as b:
        await b.handed_over("m0")
        await b.step()  # what the writer needs later is open before the limit
        await b.handed_over("m1")
        with capture_logs() as logs:
            with descriptors_exhausted():
                job = await b.step()
                assert job.parkings == 1
                assert job.not_before == pytest.approx(b.now[0] + delay(1))
                again = await b.step()
                assert again is job
                assert job.parkings == 2
                assert job.not_before == pytest.approx(b.now[0] + delay(2))
            await b.step()
        assert b.manager.stats.resource_waits == 2
        assert b.manager.stats.failed == 0
        assert len(b.lines("attachment")) == 2
        [entry] = events(logs, "download_waits_for_resources")  # the second is sampled out
        expected = {**ids("m1"), "wait": 0.7, "waits_in_episode": 1, "suppressed": 0}
        assert fields(entry, expected) == expected
        assert entry["reason"].startswith(
            ("cannot create a temp file in tmp/", "cannot open a connection")
        )
        [back] = events(logs, "download_resources_back")
        assert back["waits"] == 2
