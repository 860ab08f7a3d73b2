"""The sync endpoint over real sockets: every sync type, every error, every quirk."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from typing import Any

import aiohttp

from archiver.simulator import Simulator

from .conftest import Zoom, running, strip_jwt, truth_by_session

MSG_300 = "The sync token is invalid or expired. Please resync with the `FSync` method."
MSG_7035 = (
    "The number of new records exceeds the sync count. Please resync with the `FSync` method."
)
SECOND = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def largest(sim: Simulator) -> tuple[str, list[dict[str, Any]]]:
    return max(truth_by_session(sim).items(), key=lambda item: len(item[1]))


async def walk(zoom: Zoom, session_id: str, count: int) -> tuple[list[list[dict[str, Any]]], str]:
    """FSync, then BSync to the start of history: the pages, and the newest-side token."""
    answer = await zoom.sync(session_id, "FSync", count)
    assert answer.status == 200, answer.body
    pages = [answer.json()["sms_histories"]]
    newest_token = token = answer.json()["sync_token"]
    while True:
        answer = await zoom.sync(session_id, "BSync", count, sync_token=token)
        assert answer.status == 200, answer.body
        body = answer.json()
        if not body["sms_histories"]:
            assert body["sync_token"] == token  # the window stays where it was
            return pages, newest_token
        pages.append(body["sms_histories"])
        token = body["sync_token"]


async def test_fsync_then_bsync_returns_the_whole_session_newest_first(
    zoom: Zoom, sim: Simulator
) -> None:
    session_id, truth = largest(sim)
    pages, _ = await walk(zoom, session_id, 7)
    assert all(len(page) <= 7 for page in pages)
    flat = [message for page in pages for message in page]
    assert [strip_jwt(m) for m in flat] == [line["record"] for line in reversed(truth)]
    assert all(SECOND.fullmatch(m["date_time"]) for m in flat)
    assert [m["date_time"] for m in flat] == sorted((m["date_time"] for m in flat), reverse=True)


async def test_token_is_base64_of_session_and_window(zoom: Zoom, sim: Simulator) -> None:
    session_id, _ = largest(sim)
    token = (await zoom.sync(session_id, "FSync", 5)).json()["sync_token"]
    owner, older, newer = base64.b64decode(token).decode().rsplit("_", 2)
    assert owner == session_id and int(older) < int(newer)


async def test_isync_returns_new_messages_and_7035_when_too_many(
    zoom: Zoom, sim: Simulator
) -> None:
    session_id, _ = largest(sim)
    token = (await zoom.sync(session_id, "FSync", 250)).json()["sync_token"]
    empty = await zoom.sync(session_id, "ISync", 10, sync_token=token)
    assert empty.json() == {"sms_histories": [], "sync_token": token}
    added = sim.add_messages(3, session_id=session_id)
    answer = await zoom.sync(session_id, "ISync", 10, sync_token=token)
    got = answer.json()["sms_histories"]
    assert [m["message_id"] for m in got] == [m["message_id"] for m in reversed(added)]
    token = answer.json()["sync_token"]
    sim.add_messages(11, session_id=session_id)
    answer = await zoom.sync(session_id, "ISync", 10, sync_token=token)
    assert answer.status == 400
    assert answer.json() == {"code": 7035, "message": MSG_7035}
    assert sim.stats()["sync_errors"]["7035"] == 1


async def test_count_and_sync_type_are_validated(zoom: Zoom, sim: Simulator) -> None:
    session_id, _ = largest(sim)
    for count in (None, 0, 251, "ten", -1):
        answer = await zoom.get(
            f"/phone/sms/sessions/{session_id}/sync", sync_type="FSync", count=count
        )
        assert answer.status == 400, count
        assert answer.json()["code"] == 300
        assert answer.json()["errors"] == [{"field": "count", "message": "Invalid field."}]
    assert (await zoom.sync(session_id, "FSync", 1)).status == 200
    assert len((await zoom.sync(session_id, "FSync", 250)).json()["sms_histories"]) <= 250
    answer = await zoom.sync(session_id, "XSync", 5)
    assert answer.status == 400 and answer.json()["errors"][0]["field"] == "sync_type"


async def test_bad_foreign_or_missing_tokens_are_300(zoom: Zoom, sim: Simulator) -> None:
    (first, _), (second, _) = list(truth_by_session(sim).items())[:2]
    foreign = (await zoom.sync(second, "FSync", 5)).json()["sync_token"]
    for sync_type, token in (("BSync", "garbage"), ("ISync", foreign), ("BSync", None)):
        answer = await zoom.sync(first, sync_type, 5, sync_token=token)
        assert answer.status == 400
        assert answer.json() == {"code": 300, "message": MSG_300}


async def test_unknown_and_deleted_sessions_are_12004(zoom: Zoom, sim: Simulator) -> None:
    answer = await zoom.sync("f" * 32, "FSync", 5)
    assert answer.status == 404
    assert answer.json() == {"code": 12004, "message": f"Session does not exist: {'f' * 32}."}
    session_id, _ = largest(sim)
    token = (await zoom.sync(session_id, "FSync", 5)).json()["sync_token"]
    sim.delete_session(session_id)
    for sync_type, sync_token in (("FSync", None), ("BSync", token), ("ISync", token)):
        answer = await zoom.sync(session_id, sync_type, 5, sync_token=sync_token)
        assert (answer.status, answer.json()["code"]) == (404, 12004)


async def test_sync_tokens_expire_when_configured(http: aiohttp.ClientSession) -> None:
    async with running(token_expiry=0.3) as sim:
        zoom = Zoom(sim, http)
        session_id, _ = largest(sim)
        token = (await zoom.sync(session_id, "FSync", 3)).json()["sync_token"]
        assert (await zoom.sync(session_id, "BSync", 3, sync_token=token)).status == 200
        await asyncio.sleep(0.4)
        answer = await zoom.sync(session_id, "BSync", 3, sync_token=token)
        assert (answer.status, answer.json()) == (400, {"code": 300, "message": MSG_300})
        # A crafted token the simulator never issued is expired too.
        crafted = base64.b64encode(f"{session_id}_0_1".encode()).decode()
        assert (await zoom.sync(session_id, "ISync", 3, sync_token=crafted)).status == 400


async def test_quirk_overlap_repeats_the_boundary(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = largest(sim)
    sim.set_switches(quirk_overlap=True)
    pages, _ = await walk(zoom, session_id, 5)
    for newer, older in itertools.pairwise(pages):
        assert older[0]["message_id"] == newer[-1]["message_id"]
    ids = [m["message_id"] for page in pages for m in page]
    assert len(ids) > len(set(ids)) and set(ids) == {line["message_id"] for line in truth}


async def test_quirk_ascending_orders_oldest_first(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = largest(sim)
    sim.set_switches(quirk_ascending=True)
    page = (await zoom.sync(session_id, "FSync", 6)).json()["sms_histories"]
    assert [m["message_id"] for m in page] == [line["message_id"] for line in truth[-6:]]


async def test_quirk_duplicate_repeats_a_message_inside_a_page(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = largest(sim)
    sim.set_switches(quirk_duplicate=True)
    pages, _ = await walk(zoom, session_id, 6)
    for page in pages:
        assert len(page) <= 6
    repeated = [page for page in pages if len({m["message_id"] for m in page}) < len(page)]
    assert len(repeated) == len(pages)
    ids = {m["message_id"] for page in pages for m in page}
    assert ids == {line["message_id"] for line in truth}


async def test_quirk_no_token_on_empty_page(zoom: Zoom, sim: Simulator) -> None:
    session_id, _ = largest(sim)
    token = (await zoom.sync(session_id, "FSync", 250)).json()["sync_token"]
    assert "sync_token" in (await zoom.sync(session_id, "ISync", 5, sync_token=token)).json()
    sim.set_switches(quirk_no_token_on_empty=True)
    assert (await zoom.sync(session_id, "ISync", 5, sync_token=token)).json() == {
        "sms_histories": []
    }
    assert "sync_token" in (await zoom.sync(session_id, "FSync", 5)).json()
