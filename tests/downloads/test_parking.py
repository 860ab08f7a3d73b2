"""A URL refresh refused without evidence parks the job; only evidence fails it (defect 7)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from archiver.downloads import manager as manager_module
from archiver.zoom.ratelimit import BudgetExhausted
from tests.downloads.rig import file_sha256, running_manager
from tests.zoom.scripted import (
    HTML_403,
    HTML_404,
    SESSION,
    Reply,
    record,
    scripted_zoom,
    zoom_error,
)


class BudgetPausedFor:
    """The real client, behind a Heavy budget whose daily cap is spent for the first `times`
    refreshes of `message_id`: a pause of hours cannot be had in a test, so it is raised
    here exactly as `Budgets.acquire` raises it."""

    def __init__(self, client: Any, message_id: str, times: int, wait: float) -> None:
        self._client = client
        self._message_id = message_id
        self._left = times
        self._wait = wait
        self.raised = 0

    async def get_message(self, session_id: str, message_id: str) -> Any:
        if message_id == self._message_id and self._left:
            self._left -= 1
            self.raised += 1
            raise BudgetExhausted("heavy", time.time() + self._wait, self._wait, "daily_cap")
        return await self._client.get_message(session_id, message_id)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # The schedules' shape is under test, not their seconds. (raising=False: the old manager
    # had no PARK_BASE; the test must still run against it and fail on its behaviour.)
    monkeypatch.setattr(manager_module, "RETRY_BASE", 0.01)
    monkeypatch.setattr(manager_module, "PARK_BASE", 0.01, raising=False)


async def test_refresh_refusals_without_evidence_park_the_job_never_fail_it(
    tmp_path: Path,
) -> None:
    wrapped: list[BudgetPausedFor] = []

    def budget_first(client: Any) -> Any:
        wrapped.append(BudgetPausedFor(client, "m1", times=1, wait=0.2))
        return wrapped[0]

    async with scripted_zoom() as zoom:
        # Nine refused refreshes in a row (the old manager gave up after six, about 31 s): a
        # spent budget, 403s (HTML and JSON), 503s until the client's own retries are spent,
        # and a gateway's 404 (which the old manager took for "message gone").
        zoom.then(
            "get_message",
            Reply.html(403, HTML_403),
            zoom_error(403, 200, "No permission."),
            *[Reply(503, b"")] * 6,
            *[Reply.html(403, HTML_403)] * 3,
            Reply.html(404, HTML_404),
            Reply.html(403, HTML_403),
        )
        async with running_manager(tmp_path, zoom, wrap_client=budget_first) as rig:
            await rig.archive("m1")
            rig.manager.load_pending()  # as after a restart: the URL must be fetched again
            await rig.settled("m1")
            assert rig.lines("attachment_failed") == []
            [line] = rig.lines("attachment")
            assert (line["message_id"], line["sha256"]) == ("m1", file_sha256())
            assert wrapped[0].raised == 1
            assert zoom.requests("get_message") == 2 + 6 + 3 + 1 + 1 + 1
            assert rig.manager.stats.parkings_by_reason == {
                "park": 1,
                "retry": 1,
                "session_failure": 7,
            }
            assert rig.manager.stats.failed == 0
            await rig.drained()


async def test_a_parked_job_does_not_hold_up_the_others(tmp_path: Path) -> None:
    def paused(client: Any) -> Any:
        return BudgetPausedFor(client, "m1", times=1_000, wait=3_600.0)

    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom, wrap_client=paused) as rig:
        await rig.archive("m1")
        rig.manager.load_pending()  # m1 needs a fresh URL: its budget is paused for an hour
        await rig.archive("m2")
        m2 = rig.zoom.messages[-1]
        await rig.manager.on_archived(SESSION, [m2])  # m2 comes with its URL
        await rig.settled("m2")
        assert [line["message_id"] for line in rig.lines("attachment")] == ["m2"]
        assert rig.state.attachment_pending(SESSION, "m1", "a-m1")
        assert not rig.manager.idle()
        assert rig.manager.parked == 1
        stalled = rig.manager.stalled(min_parkings=1)
        assert stalled is not None
        assert (stalled.count, stalled.reasons) == (1, {"park": 1})
        assert rig.manager.stalled(min_parkings=2) is None


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (zoom_error(404, 12004, f"Session does not exist: {SESSION}."), "message gone upstream"),
        (Reply.json(200, record("m1")), "attachment gone upstream"),  # listed no more
    ],
    ids=["12004", "no-attachment"],
)
async def test_only_evidence_fails_a_refresh(tmp_path: Path, reply: Reply, reason: str) -> None:
    async with scripted_zoom() as zoom, running_manager(tmp_path, zoom) as rig:
        zoom.then("get_message", Reply.html(404, HTML_404), reply)  # the gateway first
        await rig.archive("m1")
        rig.manager.load_pending()
        await rig.settled("m1")
        [line] = rig.lines("attachment_failed")
        assert line["reason"] == reason
        assert rig.lines("attachment") == []
