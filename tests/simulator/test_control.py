"""The /_sim control endpoints and the in-process controls they mirror; live traffic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from archiver.simulator import Simulator

from .conftest import Zoom, strip_jwt


async def post(http: aiohttp.ClientSession, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def test_truth_endpoint_streams_the_ground_truth(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sim.control_url}/truth") as response:
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        body = await response.read()
    assert body == b"".join(sim.truth_lines())
    assert [json.loads(line) for line in body.splitlines()] == list(sim.ground_truth())


async def test_stats_endpoint(zoom: Zoom, sim: Simulator) -> None:
    await zoom.get("/phone/sms/sessions")
    async with zoom.http.get(f"{sim.control_url}/stats") as response:
        stats = await response.json()
    assert stats == sim.stats()
    assert stats["requests_total"] == 2  # the token and the listing
    assert stats["tokens_issued"] == 1
    assert stats["by_endpoint"]["list_sessions"] == {"requests": 1, "rate_limited": 0}


async def test_switches_endpoint_applies_and_refuses(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.control_url}/switches"
    status, body = await post(http, url, {"quirk_ascending": True, "labels": {"sync": "heavy"}})
    assert status == 200 and body["quirk_ascending"] is True and body["labels"]["sync"] == "heavy"
    assert sim.config.quirk_ascending
    for refused in ({"seed": 5}, {"nonsense": 1}, {"fault_5xx": "lots"}, {"plan": "free"}, [1]):
        status, body = await post(http, url, refused)
        assert status == 400, refused
        assert body["error"]
    assert sim.config.plan == "business"


async def test_messages_endpoint_adds_messages(zoom: Zoom, sim: Simulator) -> None:
    url = f"{sim.control_url}/messages"
    session_id = sim.session_ids[0]
    status, body = await post(zoom.http, url, {"n": 2, "session_id": session_id, "attachments": 2})
    assert status == 200
    added = body["messages"]
    assert [m["session_id"] for m in added] == [session_id] * 2
    assert all(len(m["record"]["attachments"]) == 2 for m in added)
    newest = (await zoom.sync(session_id, "FSync", 2)).json()["sms_histories"]
    assert [strip_jwt(m) for m in newest] == [m["record"] for m in reversed(added)]
    for att in newest[0]["attachments"]:
        async with zoom.http.get(att["download_url"]) as response:
            assert response.status == 200 and len(await response.read()) == att["size"]
    status, body = await post(zoom.http, url, {"n": 3, "new_session": True})
    assert status == 200
    assert len({m["session_id"] for m in body["messages"]}) == 1
    assert body["messages"][0]["session_id"] == sim.session_ids[-1]
    status, _ = await post(zoom.http, url, {"n": 1, "session_id": "unknown"})
    assert status == 404
    status, _ = await post(zoom.http, url, {"n": 1, "attachments": 11})
    assert status == 400


async def test_revoke_and_delete_endpoints(zoom: Zoom, sim: Simulator) -> None:
    await zoom.login()
    status, body = await post(zoom.http, f"{sim.control_url}/revoke")
    assert (status, body) == (200, {"revoked": 1})
    assert (await zoom.get("/phone/sms/sessions")).status == 401
    await zoom.login()
    session_id = sim.session_ids[1]
    delete = f"{sim.control_url}/sessions/{session_id}/delete"
    assert await post(zoom.http, delete) == (200, {"deleted": session_id})
    assert (await post(zoom.http, delete))[0] == 404
    assert (await zoom.sync(session_id, "FSync", 5)).status == 404
    assert session_id not in sim.session_ids
    marked = [line for line in sim.ground_truth() if line["session_id"] == session_id]
    assert marked and all(line["deleted"] is True for line in marked)
    assert not any(
        "deleted" in line for line in sim.ground_truth() if line["session_id"] != session_id
    )


async def test_live_traffic_follows_the_switch(sim: Simulator) -> None:
    def count() -> int:
        return sum(1 for line in sim.ground_truth() if line["kind"] == "message")

    before = count()
    sim.set_switches(live_rate=50.0)
    await asyncio.sleep(0.5)
    sim.set_switches(live_rate=0.0)
    added = count() - before
    assert 10 <= added <= 40
    await asyncio.sleep(0.2)
    assert count() - before == added
