"""Session list, session details and single messages over real sockets."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.simulator import Simulator

from .conftest import Zoom, strip_jwt, truth_by_session

LIST = "/phone/sms/sessions"


def last_times(sim: Simulator) -> dict[str, datetime]:
    return {
        session_id: datetime.strptime(
            lines[-1]["record"]["date_time"], "%Y-%m-%dT%H:%M:%SZ"
        ).replace(tzinfo=UTC)
        for session_id, lines in truth_by_session(sim).items()
    }


async def list_all(zoom: Zoom, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Every page of one listing (from page `token` on)."""
    sessions: list[dict[str, Any]] = []
    while True:
        answer = await zoom.get(LIST, next_page_token=token, **params)
        assert answer.status == 200, answer.body
        body = answer.json()
        sessions += body["sms_sessions"]
        token = body["next_page_token"]
        if token == "":
            return sessions


async def test_monthly_windows_find_every_session_exactly_once(zoom: Zoom, sim: Simulator) -> None:
    last = last_times(sim)
    start = min(last.values()).replace(hour=0, minute=0, second=0)
    seen: list[str] = []
    while start <= max(last.values()):
        stop = start + timedelta(days=30)  # from..to inclusive of that day: 31 days
        found = await list_all(
            zoom,
            session_type="all",
            page_size=2,
            **{"from": start.strftime("%Y-%m-%d"), "to": stop.strftime("%Y-%m-%d")},
        )
        for session in found:
            assert start <= last[session["session_id"]] < stop + timedelta(days=1)
        seen += [s["session_id"] for s in found]
        start = stop + timedelta(days=1)
    assert sorted(seen) == sorted(last)


async def test_session_objects_look_like_zoom(zoom: Zoom, sim: Simulator) -> None:
    found = await list_all(zoom, session_type="all", **window_around(sim))
    assert found
    for session in found:
        assert set(session) == {"session_id", "session_type", "last_access_time", "participants"}
        owners = [p for p in session["participants"] if p["is_session_owner"]]
        assert len(owners) == 1 and owners[0]["owner"]["id"]
        assert 2 <= len(session["participants"]) <= 10


def window_around(sim: Simulator) -> dict[str, str]:
    newest = max(last_times(sim).values())
    return {
        "from": (newest - timedelta(days=30)).strftime("%Y-%m-%d"),
        "to": newest.strftime("%Y-%m-%d"),
    }


async def test_session_type_defaults_to_user(zoom: Zoom, sim: Simulator) -> None:
    window = window_around(sim)
    everything = await list_all(zoom, session_type="all", **window)
    users = await list_all(zoom, **window)
    assert {s["session_id"] for s in users} == {
        s["session_id"] for s in everything if s["session_type"] == "user"
    }
    for session_type in ("call_queue", "auto_receptionist", "service_endpoint"):
        typed = await list_all(zoom, session_type=session_type, **window)
        assert all(s["session_type"] == session_type for s in typed)


async def test_without_from_and_to_the_last_30_days(zoom: Zoom, sim: Simulator) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=30)
    expected = {sid for sid, at in last_times(sim).items() if at >= cutoff}
    found = await list_all(zoom, session_type="all")
    assert {s["session_id"] for s in found} == expected
    added = sim.add_messages(1, new_session=True)
    found = await list_all(zoom, session_type="all")
    assert added[0]["session_id"] in {s["session_id"] for s in found}


async def test_to_is_inclusive_to_the_second_and_through_the_day(
    zoom: Zoom, sim: Simulator
) -> None:
    session_id, at = next(iter(last_times(sim).items()))
    second = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    for bounds in ({"from": second, "to": second}, {"from": second[:10], "to": second[:10]}):
        found = await list_all(zoom, session_type="all", **bounds)
        assert session_id in {s["session_id"] for s in found}
    before = (at - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    found = await list_all(zoom, session_type="all", **{"from": before, "to": before})
    assert session_id not in {s["session_id"] for s in found}


async def test_filter_types_and_phone_number(zoom: Zoom, sim: Simulator) -> None:
    window = {"session_type": "all", **window_around(sim)}

    async def ids(**params: str) -> set[str]:
        return {s["session_id"] for s in await list_all(zoom, **window, **params)}

    last = await ids()
    either = await ids(filter_type="sent_received_message_time")
    sent = await ids(filter_type="sent_message_time")
    received = await ids(filter_type="received_message_time")
    assert last <= either and sent | received == either
    session = (await list_all(zoom, **window))[0]
    phone = session["participants"][-1]["phone_number"]
    assert session["session_id"] in await ids(phone_number=phone)
    assert await ids(phone_number="19999999999") == set()


async def test_list_parameters_are_validated(zoom: Zoom) -> None:
    bad: list[dict[str, Any]] = [
        {"page_size": 101},
        {"page_size": 0},
        {"from": "2025-01-01", "to": "2025-02-01"},  # 32 days
        {"from": "2025-01-01"},
        {"to": "2025-01-01"},
        {"from": "2025-02-01", "to": "2025-01-01"},
        {"from": "01/02/2025", "to": "2025-01-05"},
        {"next_page_token": "!!!"},
        {"next_page_token": base64.urlsafe_b64encode(b"1_2_3").decode()},
        {"filter_type": "whenever"},
    ]
    for params in bad:
        answer = await zoom.get(LIST, **params)
        assert answer.status == 400, params
        assert answer.json()["code"] == 300, params
    answer = await zoom.get(LIST, session_type="robots")
    assert (answer.status, answer.json()["code"]) == (400, 400)
    ok = await zoom.get(LIST, page_size=100, **{"from": "2025-01-01", "to": "2025-01-31"})
    assert ok.status == 200 and ok.json()["page_size"] == 100


async def test_paging_survives_sessions_added_and_deleted(zoom: Zoom, sim: Simulator) -> None:
    window = {"session_type": "all", **window_around(sim)}
    listed = [s["session_id"] for s in await list_all(zoom, **window)]
    assert len(listed) >= 3, "the test needs a third session to delete"
    first = (await zoom.get(LIST, page_size=2, **window)).json()
    assert [s["session_id"] for s in first["sms_sessions"]] == listed[:2]
    sim.delete_session(listed[2])
    rest = await list_all(zoom, token=first["next_page_token"], page_size=2, **window)
    assert [s["session_id"] for s in rest] == listed[3:]
    # Keyset paging on creation order: a session created now comes last.
    fresh = sim.add_messages(1, new_session=True)[0]["session_id"]
    recent = await list_all(zoom, session_type="all", page_size=2)
    assert recent[-1]["session_id"] == fresh


async def test_session_details_pages_sorts_and_filters(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = max(truth_by_session(sim).items(), key=lambda item: len(item[1]))
    newest = datetime.strptime(truth[-1]["record"]["date_time"], "%Y-%m-%dT%H:%M:%SZ")
    window = {
        "from": (newest - timedelta(days=30)).strftime("%Y-%m-%d"),
        "to": newest.strftime("%Y-%m-%d"),
    }
    wanted = [
        line["record"] for line in truth if line["record"]["date_time"][:10] >= window["from"]
    ]

    async def pages(**params: Any) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        token = None
        while True:
            answer = await zoom.get(
                f"{LIST}/{session_id}", page_size=3, next_page_token=token, **window, **params
            )
            assert answer.status == 200, answer.body
            got += answer.json()["sms_histories"]
            token = answer.json()["next_page_token"]
            if not token:
                return got

    assert [strip_jwt(m) for m in await pages(sort=1)] == wanted
    assert [strip_jwt(m) for m in await pages()] == wanted[::-1]
    received = await pages(delivery_status="received")
    assert received == [m for m in await pages() if m["delivery_status"] == "received"]
    stale = base64.urlsafe_b64encode(f"3_{int(time.time()) - 3600}".encode()).decode()
    answer = await zoom.get(f"{LIST}/{session_id}", next_page_token=stale, **window)
    assert (answer.status, answer.json()["code"]) == (400, 300)


async def test_get_message_gives_fresh_urls_and_404s(zoom: Zoom, sim: Simulator) -> None:
    line = next(
        item
        for item in sim.ground_truth()
        if item["kind"] == "message" and "attachments" in item["record"]
    )
    path = f"{LIST}/{line['session_id']}/messages/{line['message_id']}"
    first = (await zoom.get(path)).json()
    assert strip_jwt(first) == line["record"]
    sim.set_switches(jwt_lifetime=600)
    second = (await zoom.get(path)).json()
    exp = [jwt_claims(m["attachments"][0]["download_url"])["exp"] for m in (first, second)]
    assert exp[1] < exp[0] and abs(exp[1] - (time.time() + 600)) < 5
    missing = await zoom.get(f"{LIST}/{line['session_id']}/messages/nope")
    assert missing.status == 404
    sim.delete_session(line["session_id"])
    gone = await zoom.get(path)
    assert (gone.status, gone.json()["code"]) == (404, 12004)


def jwt_claims(url: str) -> dict[str, Any]:
    payload = url.split("jwt=", 1)[1].split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "==")))


async def test_deleted_sessions_leave_the_list_unless_the_quirk_keeps_them(
    zoom: Zoom, sim: Simulator
) -> None:
    window = {"session_type": "all", **window_around(sim)}
    listed = [s["session_id"] for s in await list_all(zoom, **window)]
    sim.delete_session(listed[0])
    assert [s["session_id"] for s in await list_all(zoom, **window)] == listed[1:]
    sim.set_switches(quirk_list_deleted=True)
    assert [s["session_id"] for s in await list_all(zoom, **window)] == listed
    answer = await zoom.sync(listed[0], "FSync", 5)
    assert (answer.status, answer.json()["code"]) == (404, 12004)
