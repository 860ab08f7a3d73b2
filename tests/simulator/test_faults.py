"""Injected faults over real sockets, on the API and the file host."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest

from archiver.simulator import Simulator
from archiver.simulator.faults import choose_fault

from .conftest import Zoom, running, small_config

LIST = "/phone/sms/sessions"


async def a_download_url(zoom: Zoom, sim: Simulator) -> str:
    line = next(
        item
        for item in sim.ground_truth()
        if item["kind"] == "message" and "attachments" in item["record"]
    )
    path = f"{LIST}/{line['session_id']}/messages/{line['message_id']}"
    return str((await zoom.get(path)).json()["attachments"][0]["download_url"])


def test_choose_fault_follows_the_odds() -> None:
    config = small_config(fault_5xx=0.2, fault_reset=0.1, fault_slow=0.3)
    rng = random.Random(0)
    draws = [choose_fault(config, rng) for _ in range(10_000)]
    assert draws.count("5xx") == pytest.approx(2000, abs=200)
    assert draws.count("reset") == pytest.approx(1000, abs=150)
    assert draws.count("slow") == pytest.approx(3000, abs=250)
    assert draws.count(None) == pytest.approx(4000, abs=250)
    assert {"truncate", "stall"}.isdisjoint(draws)
    assert choose_fault(small_config(), rng) is None


async def test_server_errors_on_api_and_file_host(zoom: Zoom, sim: Simulator) -> None:
    url = await a_download_url(zoom, sim)
    sim.set_switches(fault_5xx=1.0)
    kinds = set()
    for _ in range(12):
        answer = await zoom.get(LIST)
        assert answer.status in (500, 502, 503)
        kinds.add(answer.headers["Content-Type"].split(";")[0])
        async with zoom.http.get(url) as response:
            assert response.status in (500, 502, 503)
    assert kinds == {"application/json", "text/html"}
    # Control endpoints are never faulted.
    async with zoom.http.get(f"{sim.control_url}/stats") as response:
        stats = await response.json()
    assert stats["faults"]["5xx"] == 24
    assert stats["by_status"]["200"] >= 1


async def test_connection_reset(zoom: Zoom, sim: Simulator) -> None:
    url = await a_download_url(zoom, sim)
    sim.set_switches(fault_reset=1.0)
    for target in (sim.api_url + LIST, url):
        with pytest.raises(aiohttp.ClientConnectionError):
            async with zoom.http.get(
                target, headers={"Authorization": f"Bearer {zoom.token}"}
            ) as r:
                await r.read()


async def test_truncated_bodies(zoom: Zoom, sim: Simulator) -> None:
    url = await a_download_url(zoom, sim)
    sim.set_switches(fault_truncate=1.0)
    for target in (sim.api_url + LIST, url):
        with pytest.raises(aiohttp.ClientPayloadError):
            async with zoom.http.get(
                target, headers={"Authorization": f"Bearer {zoom.token}"}
            ) as r:
                assert r.status == 200
                await r.read()


async def test_slow_answers_arrive_late_but_whole(zoom: Zoom, sim: Simulator) -> None:
    await zoom.login()
    sim.set_switches(fault_slow=1.0, slow_seconds=0.3)
    started = time.monotonic()
    answer = await zoom.get(LIST)
    assert answer.status == 200 and time.monotonic() - started >= 0.3


async def whole_answer(http: aiohttp.ClientSession, url: str) -> bytes:
    """The body of `url`, waiting as long as it takes (no client timeout at all)."""
    async with http.get(url, timeout=aiohttp.ClientTimeout()) as response:
        return await response.read()


async def test_stalls_time_out_and_do_not_hold_up_shutdown(http: aiohttp.ClientSession) -> None:
    sim = Simulator(small_config(attachment_probability=0.5))
    await sim.__aenter__()
    waiting: list[asyncio.Task[bytes]] = []
    try:
        zoom = Zoom(sim, http)
        url = await a_download_url(zoom, sim)
        # Far shorter than aiohttp's own shutdown timeout (60 s): a simulator that waited for
        # its handlers at shutdown would let these stalls run out and finish their answers.
        sim.set_switches(fault_stall=1.0, stall_seconds=20.0)
        short = aiohttp.ClientTimeout(total=0.3)
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(sim.api_url + LIST, timeout=short) as response:
                await response.read()
        # The file host stalls mid-body: the head arrives, the rest does not.
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(url, timeout=aiohttp.ClientTimeout(sock_read=0.3)) as response:
                assert response.status == 200
                await response.read()
        # Two clients that would wait for ever, stalled inside the simulator when it stops.
        stalls = sim.stats()["faults"]["stall"]
        waiting = [asyncio.create_task(whole_answer(http, u)) for u in (sim.api_url + LIST, url)]
        while sim.stats()["faults"]["stall"] < stalls + len(waiting):
            await asyncio.sleep(0.01)
    finally:
        await sim.__aexit__(None, None, None)
    # Shutdown cut both answers off (the connection dropped) instead of waiting the stalls
    # out: neither client got a whole body. Nothing here depends on how fast the machine is.
    answers = await asyncio.gather(*waiting, return_exceptions=True)
    assert len(answers) == 2
    assert all(isinstance(answer, aiohttp.ClientError) for answer in answers), answers


async def test_faults_never_change_the_data() -> None:
    async with running(fault_5xx=0.3, fault_reset=0.3) as faulty, running() as calm:
        one = [line for line in faulty.truth_lines()]
        other = [line for line in calm.truth_lines()]
        assert [x.replace(faulty.file_url.encode(), b"F") for x in one] == [
            x.replace(calm.file_url.encode(), b"F") for x in other
        ]
