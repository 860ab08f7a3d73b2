"""The switches of "any Zoom the documentation allows", over real sockets.

ISync boundary in a slot (quirk_overlap), short FSync/BSync pages, non-empty pages without a
token, sync tokens refused a while after issue, and a gateway's HTML 404, 403 and 502. Each
changes only what a response shows: a client that keeps asking still gets every message.
"""

from __future__ import annotations

import asyncio
import base64
import random
from typing import Any

import aiohttp
import pytest

from archiver.simulator import Simulator
from archiver.simulator.faults import choose_gateway

from .conftest import Answer, Zoom, running, small_config, strip_jwt, truth_by_session
from .test_faults import a_download_url

LIST = "/phone/sms/sessions"
LIST_PATH = "/v2" + LIST
MSG_300 = "The sync token is invalid or expired. Please resync with the `FSync` method."


def largest(sim: Simulator) -> tuple[str, list[dict[str, Any]]]:
    return max(truth_by_session(sim).items(), key=lambda item: len(item[1]))


def ids(page: list[dict[str, Any]]) -> list[str]:
    return [m["message_id"] for m in page]


def kind(answer: Answer) -> str:
    return answer.headers["Content-Type"].split(";")[0]


async def test_full_isync_page_holds_the_known_boundary_and_leaves_the_newest(
    zoom: Zoom, sim: Simulator
) -> None:
    session_id, truth = largest(sim)
    sim.set_switches(quirk_overlap=True)
    token = (await zoom.sync(session_id, "FSync", 250)).json()["sync_token"]
    known_newest = truth[-1]["message_id"]
    added = [m["message_id"] for m in sim.add_messages(5, session_id=session_id)]
    first = (await zoom.sync(session_id, "ISync", 5, sync_token=token)).json()
    # Full (5 of 5), yet one slot is the message the token already covered.
    assert len(first["sms_histories"]) == 5
    assert known_newest in ids(first["sms_histories"])
    assert set(ids(first["sms_histories"])) == {known_newest, *added[:4]}
    second = (await zoom.sync(session_id, "ISync", 5, sync_token=first["sync_token"])).json()
    assert set(ids(second["sms_histories"])) == {added[3], added[4]}
    third = (await zoom.sync(session_id, "ISync", 5, sync_token=second["sync_token"])).json()
    assert third["sms_histories"] == []


async def test_short_pages_while_older_messages_remain(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = largest(sim)
    sim.set_switches(short_page_probability=1.0)
    count = 7
    answer = (await zoom.sync(session_id, "FSync", count)).json()
    pages = [answer["sms_histories"]]
    token = answer["sync_token"]
    while True:
        body = (await zoom.sync(session_id, "BSync", count, sync_token=token)).json()
        if not body["sms_histories"]:
            break
        pages.append(body["sms_histories"])
        token = body["sync_token"]
    assert len(pages) > len(truth) / count + 1  # shorter pages, so more of them
    # Every page but the last one is short while older messages remain.
    assert all(1 <= len(page) < count for page in pages[:-1])
    flat = [m for page in pages for m in page]
    assert [strip_jwt(m) for m in flat] == [line["record"] for line in reversed(truth)]
    assert sim.stats()["faults"]["short_page"] >= len(pages) - 1


async def test_short_pages_come_with_the_configured_odds(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = largest(sim)
    assert len(truth) > 10
    sim.set_switches(short_page_probability=0.5)
    lengths = [
        len((await zoom.sync(session_id, "FSync", 10)).json()["sms_histories"]) for _ in range(60)
    ]
    assert 10 in lengths and any(n < 10 for n in lengths)
    # ISync is never cut short: a token from before the first message gets them all.
    sim.set_switches(short_page_probability=1.0)
    assert len(truth) <= 250
    oldest = base64.b64encode(f"{session_id}_0_0".encode()).decode()
    isync = await zoom.sync(session_id, "ISync", len(truth), sync_token=oldest)
    assert len(isync.json()["sms_histories"]) == len(truth)


async def test_non_empty_pages_without_a_token(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = largest(sim)
    sim.set_switches(no_token_probability=1.0)
    for _ in range(3):
        body = (await zoom.sync(session_id, "FSync", 5)).json()
        assert "sync_token" not in body
        assert ids(body["sms_histories"]) == [line["message_id"] for line in truth[-5:]][::-1]
    sim.set_switches(no_token_probability=0.0)
    token = (await zoom.sync(session_id, "FSync", 250)).json()["sync_token"]
    sim.set_switches(no_token_probability=1.0)
    # An empty page keeps its token (quirk_no_token_on_empty is the switch for that).
    empty = (await zoom.sync(session_id, "ISync", 5, sync_token=token)).json()
    assert empty == {"sms_histories": [], "sync_token": token}
    sim.set_switches(no_token_probability=0.5)
    tokens = ["sync_token" in (await zoom.sync(session_id, "FSync", 5)).json() for _ in range(40)]
    assert True in tokens and False in tokens
    assert sim.stats()["faults"]["no_token"] == 3 + tokens.count(False)


async def test_sync_tokens_are_refused_a_while_after_issue_however_often_used(
    http: aiohttp.ClientSession,
) -> None:
    # Lifetime 2 s, with margins of 0.8 s either side for a busy machine.
    async with running(token_expiry=2.0) as sim:
        zoom = Zoom(sim, http)
        session_id, truth = largest(sim)
        assert len(truth) > 6
        token = (await zoom.sync(session_id, "FSync", 3)).json()["sync_token"]
        # Using it does not keep it alive: its clock started when it was issued.
        for _ in range(3):
            answer = await zoom.sync(session_id, "BSync", 3, sync_token=token)
            assert answer.status == 200 and answer.json()["sync_token"] != token
            await asyncio.sleep(0.4)
        await asyncio.sleep(1.6)
        answer = await zoom.sync(session_id, "BSync", 3, sync_token=token)
        assert (answer.status, answer.json()) == (400, {"code": 300, "message": MSG_300})
        # The same window issued again is a fresh token: an idle ISync restarts its clock.
        newest = (await zoom.sync(session_id, "FSync", 3)).json()["sync_token"]
        await asyncio.sleep(1.2)
        again = (await zoom.sync(session_id, "ISync", 3, sync_token=newest)).json()
        assert again == {"sms_histories": [], "sync_token": newest}
        await asyncio.sleep(1.2)  # 2.4 s after the first issue, 1.2 s after the second
        assert (await zoom.sync(session_id, "ISync", 3, sync_token=newest)).status == 200
        assert sim.stats()["sync_errors"]["300"] == 1


def test_choose_gateway_only_on_api_paths_and_by_the_odds() -> None:
    config = small_config(html_404_probability=0.2, forbidden_probability=0.3)
    rng = random.Random(0)
    draws = [choose_gateway(config, rng, LIST_PATH) for _ in range(10_000)]
    assert draws.count("html_404") == pytest.approx(2000, abs=200)
    assert draws.count("forbidden") == pytest.approx(3000, abs=250)
    assert draws.count(None) == pytest.approx(5000, abs=250)
    for path in ("/oauth/token", "/file/download/abc", "/_sim/stats"):
        assert {choose_gateway(config, rng, path) for _ in range(100)} == {None}
    assert choose_gateway(small_config(), rng, LIST_PATH) is None


async def test_gateway_html_404_on_api_requests_only(zoom: Zoom, sim: Simulator) -> None:
    session_id, truth = largest(sim)
    message_id = truth[0]["message_id"]
    url = await a_download_url(zoom, sim)
    sim.set_switches(html_404_probability=1.0)
    # Neither the file host nor the OAuth endpoint is behind this gateway.
    async with zoom.http.get(url) as response:
        assert response.status == 200
    paths = [
        LIST,
        f"{LIST}/{session_id}",
        f"{LIST}/{session_id}/messages/{message_id}",
        f"{LIST}/{session_id}/sync?sync_type=FSync&count=5",
    ]
    assert (await zoom.fetch_token()).status == 200
    await zoom.login()
    for path in paths:
        answer = await zoom.get(path)
        assert (answer.status, kind(answer)) == (404, "text/html")
        assert b"12004" not in answer.body and b'"code"' not in answer.body
    async with zoom.http.get(f"{sim.control_url}/stats") as response:
        stats = await response.json()
    assert stats["faults"]["html_404"] == len(paths)
    assert stats["by_status"]["404"] == len(paths)


async def test_forbidden_as_json_or_html_never_12004(zoom: Zoom, sim: Simulator) -> None:
    session_id, _ = largest(sim)
    sim.set_switches(forbidden_probability=1.0)
    assert (await zoom.fetch_token()).status == 200
    kinds = set()
    for _ in range(30):
        answer = await zoom.sync(session_id, "FSync", 5)
        assert answer.status == 403
        kinds.add(kind(answer))
        if kind(answer) == "application/json":
            assert answer.json()["code"] != 12004
    assert kinds == {"application/json", "text/html"}
    assert sim.stats()["faults"]["forbidden"] == 30


async def test_fault_5xx_includes_a_gateways_html_502(zoom: Zoom, sim: Simulator) -> None:
    await zoom.login()
    sim.set_switches(fault_5xx=1.0)
    seen = set()
    for _ in range(60):
        answer = await zoom.get(LIST)
        seen.add((answer.status, kind(answer)))
    assert (502, "text/html") in seen


async def test_gateway_and_faults_compose_by_their_odds(zoom: Zoom, sim: Simulator) -> None:
    await zoom.login()
    sim.set_switches(fault_5xx=0.3, html_404_probability=0.3, forbidden_probability=0.3)
    statuses = [(await zoom.get(LIST)).status for _ in range(200)]
    assert {200, 403, 404} <= set(statuses) and set(statuses) <= {200, 403, 404, 500, 502, 503}
    faults = sim.stats()["faults"]
    assert faults["5xx"] + faults["html_404"] + faults["forbidden"] == 200 - statuses.count(200)


async def tolerant_get(zoom: Zoom, path: str, **params: Any) -> dict[str, Any]:
    """What any client must do here: ask again until Zoom answers 200."""
    for _ in range(200):
        answer = await zoom.get(path, **params)
        if answer.status == 200:
            return dict(answer.json())
        assert answer.status in (403, 404, 500, 502, 503), answer.body
        assert b"12004" not in answer.body
    raise AssertionError(f"{path}: never answered 200")


async def test_every_switch_at_once_still_shows_all_the_truth(http: aiohttp.ClientSession) -> None:
    switches = {
        "quirk_overlap": True,
        "short_page_probability": 0.3,
        "no_token_probability": 0.3,
        "html_404_probability": 0.2,
        "forbidden_probability": 0.2,
        "fault_5xx": 0.2,
        "token_expiry": 30.0,
    }
    async with running(**switches) as sim, running() as calm:
        zoom = Zoom(sim, http)
        truth = truth_by_session(sim)
        for session_id, lines in truth.items():
            path = f"{LIST}/{session_id}/sync"
            seen: dict[str, dict[str, Any]] = {}
            body: dict[str, Any] = {}
            while "sync_token" not in body:  # a page without a token is asked for again
                body = await tolerant_get(zoom, path, sync_type="FSync", count=6)
            while True:
                seen.update({m["message_id"]: strip_jwt(m) for m in body["sms_histories"]})
                token = body["sync_token"]
                body = {}
                while "sync_token" not in body:
                    body = await tolerant_get(
                        zoom, path, sync_type="BSync", count=6, sync_token=token
                    )
                if not body["sms_histories"]:
                    break
            assert seen == {line["message_id"]: line["record"] for line in lines}, session_id
        faults = sim.stats()["faults"]
        assert {"short_page", "no_token", "html_404", "forbidden", "5xx"} <= set(faults)
        # The data behind the answers is untouched.
        assert [x.replace(sim.file_url.encode(), b"F") for x in sim.truth_lines()] == [
            x.replace(calm.file_url.encode(), b"F") for x in calm.truth_lines()
        ]


async def test_a_message_shows_visible_lag_seconds_after_its_date_time(
    zoom: Zoom, sim: Simulator
) -> None:
    session_id, _truth = largest(sim)
    [shown] = sim.add_messages(1, session_id=session_id)
    await asyncio.sleep(1.6)  # older than the lag: shown
    sim.set_switches(visible_lag=1.5)
    [added] = [m["message_id"] for m in sim.add_messages(1, session_id=session_id)]
    fsync = (await zoom.sync(session_id, "FSync", 3)).json()
    assert ids(fsync["sms_histories"])[0] == shown["message_id"]  # not yet the new one
    listing = (await zoom.get(LIST, page_size=100)).json()["sms_sessions"]
    listed = {s["session_id"]: s["last_access_time"] for s in listing}
    assert listed[session_id] == shown["record"]["date_time"][:19] + "Z"
    await asyncio.sleep(1.6)
    later = (await zoom.sync(session_id, "ISync", 3, sync_token=fsync["sync_token"])).json()
    assert ids(later["sms_histories"]) == [added]
