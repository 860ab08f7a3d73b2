"""The simulator's webhook sender: Zoom's signing, its retry schedule, giving up."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from archiver.errors import ConfigError
from archiver.simulator import Simulator, SimulatorConfig
from archiver.simulator.config import retry_delays
from tests.webhook.conftest import SECRET, free_port, sim_config


@asynccontextmanager
async def endpoint(
    answers: list[int],
) -> AsyncIterator[tuple[str, list[tuple[float, dict[str, str], bytes]]]]:
    """A stand-in receiver answering `answers` in turn (then 200), recording each request."""
    seen: list[tuple[float, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((time.monotonic(), dict(request.headers), await request.read()))
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", seen
    finally:
        await runner.cleanup()


def valid(headers: dict[str, str], body: bytes) -> bool:
    stamp = headers["x-zm-request-timestamp"]
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    fresh = abs(int(stamp) - time.time()) <= 5
    return fresh and headers["x-zm-signature"] == f"v0={digest.hexdigest()}"


async def test_events_are_signed_and_retried_on_zooms_schedule() -> None:
    async with endpoint([503, 500]) as (url, seen):
        config = sim_config(webhook_url=url, webhook_retry_schedule="1.0,1.1,5")
        async with Simulator(config) as sim:
            started = time.monotonic()
            (line,) = sim.add_messages(1)
            async with asyncio.timeout(10):
                await sim.drain_webhooks()
            stats = sim.stats()["webhooks"]
    assert stats == {
        "events": 1,
        "attempts": 3,
        "delivered": 1,
        "retries": 2,
        "given_up": 0,
        "validations": {},
    }
    times = [at - started for at, _, _ in seen]
    # Retry n is due schedule[n] after the first attempt, which left after `started`: never
    # sooner, however fast the machine.
    assert times[1] >= 1.0 and times[2] >= 1.1
    # Due from the first attempt, not from the one before: retry 2 comes 0.1 s after retry 1,
    # where a reading from the previous attempt would wait 1.1 s (room for 1 s of lag).
    assert times[2] - times[1] < 1.0
    bodies = {body for _, _, body in seen}
    assert len(bodies) == 1  # the same event every time...
    assert all(valid(headers, body) for _, headers, body in seen)  # ...signed afresh
    event = json.loads(seen[0][2])
    assert event["payload"]["object"]["message_id"] == line["message_id"]
    assert event["event"] in ("phone.sms_received", "phone.sms_sent", "phone.sms_sent_failed")


async def test_an_event_is_given_up_after_the_last_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    async with Simulator(sim_config(webhook_url=url, webhook_retry_schedule="0.1,0.2")) as sim:
        sim.add_messages(2)
        async with asyncio.timeout(10):
            await sim.drain_webhooks()
        stats = sim.stats()["webhooks"]
    assert (stats["attempts"], stats["retries"], stats["given_up"]) == (6, 4, 2)


async def test_a_slow_answer_counts_as_failed() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        config = sim_config(
            webhook_url=f"http://127.0.0.1:{port}/hook",
            webhook_timeout=0.2,
            webhook_retry_schedule="",
        )
        async with Simulator(config) as sim:
            sim.add_messages(1)
            async with asyncio.timeout(10):
                await sim.drain_webhooks()
            assert sim.stats()["webhooks"]["given_up"] == 1
    finally:
        await runner.cleanup()


def test_no_events_without_a_url_and_no_secret_in_the_switches() -> None:
    switches = SimulatorConfig(webhook_secret="hidden").switches()
    assert "webhook_secret" not in switches
    assert switches["webhook_url"] == "" and switches["webhook_retry_schedule"] == "300,1200,3600"


@pytest.mark.parametrize(
    ("schedule", "delays"),
    [("300,1200,3600", (300.0, 1200.0, 3600.0)), ("", ()), (" 0.5, 1 ,2", (0.5, 1.0, 2.0))],
)
def test_retry_schedule_parses(schedule: str, delays: tuple[float, ...]) -> None:
    assert retry_delays(schedule) == delays


@pytest.mark.parametrize("schedule", ["5m", "1,0", "2,1", "-1", "nan", ",".join(["1"] * 11)])
def test_retry_schedule_refused(schedule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SimulatorConfig(webhook_retry_schedule=schedule)
    assert caught.value.key == "webhook_retry_schedule"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"webhook_secret": ""}, "webhook_secret"),
        ({"webhook_timeout": 0}, "webhook_timeout"),
    ],
)
def test_webhook_knobs_refused(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SimulatorConfig(**changes)  # type: ignore[arg-type]
    assert caught.value.key == key
