"""The file host failing without evidence parks the job; only evidence fails it (issue 14,
review finding 6).

Before: six 5xx/reset answers in a row (about 31 s) wrote `attachment_failed` "file host
answered 502", and four gateway 404/403 pages in a row wrote "download URL kept failing after
refreshes" within milliseconds, the refreshes made back to back and counted whatever caused
them. Both lines are final: no later pass tries again, while Zoom still serves the file.
Now: a reset, a 5xx, a gateway's HTML page parks the job with capped backoff as often as it
takes; a refresh comes only after a pause; only a fresh URL refused again by the file host
itself (its JSON answer, an error document, the wrong size) counts, MAX_REFRESHES of them
being evidence.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from archiver.downloads import manager as manager_module
from archiver.downloads.fetch import Fetcher, FetchError, download_session
from archiver.downloads.manager import MAX_REFRESHES, DownloadManager
from archiver.sync.supervisor import PARK_LIMIT_ONCE
from tests.downloads.rig import FILE, LOCAL, Rig, file_sha256, running_manager
from tests.zoom.scripted import (
    HTML_403,
    HTML_404,
    HTML_502,
    SESSION,
    Reply,
    scripted_zoom,
    zoom_error,
)

KEY = (SESSION, "m1", "a-m1")
# Job.parked and the parkings metric's reasons (literals: the test must run, and fail on its
# behaviour, against the manager before the fix, which had no such names)
FILE_HOST = "file_host"
URL_REFUSED = "url_refused"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # The schedule's shape is under test, not its seconds.
    monkeypatch.setattr(manager_module, "RETRY_BASE", 0.01)
    monkeypatch.setattr(manager_module, "PARK_BASE", 0.01, raising=False)
    monkeypatch.setattr(manager_module, "PARK_CAP", 0.05, raising=False)


class Watching:
    """The real client; each URL refresh notes how many tries in a row the job had parked
    before it (`parkings`), so a test can see that no refresh came without a pause."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.manager: DownloadManager | None = None
        self.parkings_at_refresh: list[int] = []

    async def get_message(self, session_id: str, message_id: str) -> Any:
        assert self.manager is not None
        job = self.manager._jobs.get((session_id, message_id, f"a-{message_id}"))
        self.parkings_at_refresh.append(job.parkings if job is not None else -1)
        return await self._client.get_message(session_id, message_id)


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _done(rig: Rig) -> None:
    assert rig.lines("attachment_failed") == []
    [line] = rig.lines("attachment")
    assert (line["message_id"], line["sha256"], line["size"]) == ("m1", file_sha256(), len(FILE))


@pytest.mark.parametrize(
    "answers",
    [
        [Reply.html(502, HTML_502)] * 9,
        [Reply(503, b""), zoom_error(500, 500, "Internal Server Error"), Reply(429, b"")] * 3,
    ],
    ids=["gateway-502-x9", "5xx-and-429-x9"],
)
async def test_a_file_host_outage_parks_the_job_and_keeps_its_url(
    tmp_path: Path, answers: list[Reply]
) -> None:
    async with scripted_zoom() as zoom:
        zoom.then("file", *answers)  # nine failures (the old limit: six), then the file
        async with running_manager(tmp_path, zoom) as rig:
            await rig.archive("m1")
            rig.manager.load_pending()  # as after a restart: one fresh URL first
            await rig.settled("m1")
            _done(rig)
            assert zoom.requests("file") == len(answers) + 1
            # A 5xx says nothing about the URL: it is kept, no refresh per failure.
            assert zoom.requests("get_message") == 1
            assert rig.manager.stats.parkings_by_reason == {FILE_HOST: len(answers)}
            assert rig.manager.stats.failed == 0
            await rig.drained()


async def test_gateway_refusals_refresh_after_a_pause_and_never_count(tmp_path: Path) -> None:
    watching: list[Watching] = []

    def watch(client: Any) -> Any:
        watching.append(Watching(client))
        return watching[0]

    async with scripted_zoom() as zoom:
        gateway = [Reply.html(404, HTML_404), Reply.html(403, HTML_403), Reply(404, b"")] * 3
        zoom.then("file", *gateway)  # nine gateway pages, twice MAX_REFRESHES, then the file
        async with running_manager(tmp_path, zoom, wrap_client=watch) as rig:
            watching[0].manager = rig.manager
            await rig.archive("m1")
            rig.manager.load_pending()
            await rig.settled("m1")
            _done(rig)
            assert rig.manager.stats.parkings_by_reason == {FILE_HOST: len(gateway)}
            # Each gateway page drops the URL; its refresh comes only after the job parked:
            # the first refresh (no URL yet) at 0 parkings, then one per pause, 1, 2, ... 9.
            assert watching[0].parkings_at_refresh == list(range(len(gateway) + 1))
            assert zoom.requests("file") == len(gateway) + 1


async def test_fresh_urls_refused_by_the_file_host_itself_are_evidence(tmp_path: Path) -> None:
    watching: list[Watching] = []

    def watch(client: Any) -> Any:
        watching.append(Watching(client))
        return watching[0]

    async with scripted_zoom() as zoom:
        refusal = zoom_error(404, 404, "File does not exist.")  # the file host's own JSON
        # The URL the sync page carried is refused first: not counted (it may simply be old).
        # Gateway pages in between count for nothing. Then MAX_REFRESHES fresh URLs refused.
        zoom.then(
            "file",
            refusal,
            Reply.html(502, HTML_502),
            *[refusal, Reply.html(404, HTML_404)] * (MAX_REFRESHES - 1),
            refusal,
        )
        async with running_manager(tmp_path, zoom, wrap_client=watch) as rig:
            watching[0].manager = rig.manager
            await rig.archive("m1")
            await rig.manager.on_archived(SESSION, [zoom.messages[-1]])  # with the page's URL
            await rig.settled("m1")
            await rig.drained()  # the ledger says "done" a moment before the stats do
            [line] = rig.lines("attachment_failed")
            assert line["reason"] == (
                "download URL kept failing after refreshes: file host answered 404"
            )
            assert rig.lines("attachment") == []
            assert rig.manager.stats.failures_by_reason == {"refreshes_exhausted": 1}
            # Every refresh followed a pause (the page's URL needed none to start with).
            seen = watching[0].parkings_at_refresh
            assert len(seen) == 2 * MAX_REFRESHES - 1
            assert all(a < b for a, b in itertools.pairwise(seen)) and seen[0] >= 1
            assert rig.manager.stats.parkings_by_reason == {
                URL_REFUSED: MAX_REFRESHES,
                FILE_HOST: MAX_REFRESHES,
            }


async def test_a_size_zoom_keeps_getting_wrong_is_evidence_on_fresh_urls(tmp_path: Path) -> None:
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom) as rig:
        await rig.archive("m1")
        zoom.messages[-1]["attachments"][0]["size"] = len(FILE) + 1  # what every refresh says
        rig.manager.load_pending()
        await rig.settled("m1")
        [line] = rig.lines("attachment_failed")
        assert line["reason"] == (
            f"download URL kept failing after refreshes: received {len(FILE)} bytes, "
            f"Zoom advertised {len(FILE) + 1}"
        )
        assert zoom.requests("get_message") == MAX_REFRESHES
        assert zoom.requests("file") == MAX_REFRESHES


async def test_once_ends_its_pass_when_the_file_host_keeps_failing(tmp_path: Path) -> None:
    async with scripted_zoom() as zoom:
        zoom.then("file", *[Reply.html(502, HTML_502)] * 500)  # down for as long as we ask
        async with running_manager(tmp_path, zoom) as rig:
            await rig.archive("m1")
            rig.manager.load_pending()
            seen: list[tuple[int, bool]] = []

            def record_and_check() -> bool:
                job = rig.manager._jobs.get(KEY)
                if job is not None and job.parked is not None:
                    seen.append((job.parkings, rig.manager.settled_for_once(PARK_LIMIT_ONCE)))
                return bool(seen) and seen[-1][1]

            await _until(record_and_check)
            assert all(not settled for parkings, settled in seen if parkings < 6)
            assert seen[-1][0] >= 6
            stalled = rig.manager.stalled(6)
            assert stalled is not None and stalled.reasons == {FILE_HOST: 1}
            # Pending, never failed: the next pass tries again.
            assert rig.state.attachment_pending(*KEY)
            assert rig.lines("attachment_failed") == []


@pytest.mark.parametrize(
    ("reply", "evidence"),
    [
        (zoom_error(404, 404, "File does not exist."), True),
        (zoom_error(401, 401, "Token expired."), True),
        (Reply.html(404, HTML_404), False),
        (Reply.html(403, HTML_403), False),
        (Reply(410, b""), False),
        (Reply(403, b"denied", "text/plain"), False),
    ],
    ids=["json-404", "json-401", "html-404", "html-403", "empty-410", "text-403"],
)
async def test_only_the_file_hosts_own_json_refusal_is_evidence(
    tmp_path: Path, reply: Reply, evidence: bool
) -> None:
    async with scripted_zoom() as zoom, download_session(LOCAL, 1) as http:
        zoom.files["m1"] = FILE
        zoom.then("file", reply)
        (tmp_path / "tmp").mkdir()
        fetcher = Fetcher(http, LOCAL, tmp_dir=tmp_path / "tmp", max_bytes=1 << 20)
        try:
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(zoom.file_url("m1", 2e9), expected_size=None, dig=None)
        finally:
            fetcher.close()
    assert (info.value.refresh, info.value.evidence, info.value.status) == (
        True,
        evidence,
        reply.status,
    )
    assert ("gateway" in info.value.reason) is not evidence
    assert list((tmp_path / "tmp").iterdir()) == []
