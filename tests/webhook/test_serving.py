"""The connection guard in front of both servers, in-process over loopback (issue 18 review).

Slow readers are real sockets with a tiny receive buffer that pipeline requests and never
read; the descriptors are counted in /proc/self/fd. Every test here failed on 077c09d (the
commit each names what it showed there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from archiver.ops import serving
from archiver.ops.metrics import Telemetry, build_registry

BIG = "ok\n" * 4000  # ~12 KB: more than a 1 KiB receive buffer and the kernel's slack


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.asynccontextmanager
async def serve(limits: serving.Limits, name: str) -> AsyncIterator[tuple[web.Application, int]]:
    app = serving.guarded_app(name, limits)

    async def big(_: web.Request) -> web.Response:
        return web.Response(text=BIG)

    app.router.add_get("/big", big)
    runner, site = await serving.start(app, limits, "127.0.0.1", 0)
    try:
        yield app, site.port
    finally:
        await runner.cleanup()


async def stalled_reader(port: int, requests: int = 200) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    with contextlib.suppress(BlockingIOError):
        s.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
    return s


def sample(scrape: str, line: str) -> float:
    (value,) = [x.rsplit(" ", 1)[1] for x in scrape.splitlines() if x.startswith(line + " ")]
    return float(value)


async def test_evicted_slow_readers_are_aborted_and_counted_until_gone() -> None:
    """On 077c09d the evicted connections kept their sockets (transport.close() waits for an
    answer that never drains) and left the count: 12 server-side descriptors for a cap of 4."""
    limits = serving.Limits(
        max_connections=4, nofile_share=1.0, header_timeout=30.0, body_timeout=5.0
    )
    async with serve(limits, "probe-evict") as (app, port):
        guard = app[serving.GUARD]
        base = fds()
        clients = []
        try:
            for _ in range(3 * guard.cap):
                clients.append(await stalled_reader(port))
                await asyncio.sleep(0.2)  # the answers back up: the connection is closing
            await asyncio.sleep(0.5)
            server_side = fds() - base - len(clients)
            assert guard.stats.evicted >= 2 * guard.cap - 1, guard.stats
            assert server_side <= guard.cap, (guard.cap, server_side, guard.stats)
        finally:
            for s in clients:
                s.close()


async def test_an_answer_stuck_unsent_is_aborted_at_the_write_deadline() -> None:
    """Below the cap nothing evicts: on 077c09d a reader that never reads held its socket and
    its handler for ever."""
    limits = serving.Limits(
        max_connections=8,
        nofile_share=1.0,
        header_timeout=30.0,
        body_timeout=5.0,
        write_timeout=1.0,
    )
    async with serve(limits, "probe-stall") as (app, port):
        guard = app[serving.GUARD]
        base = fds()
        client = await stalled_reader(port)
        try:
            async with asyncio.timeout(10):
                while fds() - base - 1 > 0:
                    await asyncio.sleep(0.1)
            assert guard.stats.stalled == 1
            assert guard.stats.evicted == 0
            scrape = generate_latest(build_registry(Telemetry(poll_interval=60))).decode()
            how = 'zsa_http_connections_shed_total{how="stalled",server="probe-stall"}'
            assert sample(scrape, how) == 1.0
        finally:
            client.close()


async def test_the_metrics_port_answers_one_request_per_connection() -> None:
    async with serve(serving.METRICS_LIMITS, "probe-pipeline") as (_app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
        data = await asyncio.wait_for(reader.read(), 10)  # EOF after the first answer
        writer.close()
    assert data.count(b"HTTP/1.1 200") == 1
    assert b"Connection: close" in data


async def test_malformed_requests_are_counted_and_logged_without_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On 077c09d each wrote "Error handling request" and a traceback to stderr."""
    requests = 200
    async with serve(serving.METRICS_LIMITS, "probe-malformed") as (app, port):

        async def bad() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer

        with capture_logs() as logs:
            answers = [await bad() for _ in range(requests)]
        guard = app[serving.GUARD]
        scrape = generate_latest(build_registry(Telemetry(poll_interval=60))).decode()
    assert all(a.split(b" ", 2)[1] == b"400" for a in answers), answers[0]
    assert guard.stats.malformed == requests
    line = 'zsa_http_bad_requests_total{kind="malformed",server="probe-malformed"}'
    assert sample(scrape, line) == requests
    logged = [e for e in logs if e["event"] == "http_malformed_request"]
    assert 1 <= len(logged) <= 5, len(logged)
    assert "Traceback" not in str(logs)
    assert logged[0]["error"] == "BadHttpMessage: Invalid header token"
    assert "no colon" not in str(logs)  # the client's bytes are not quoted
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error handling request" not in err, err[:2000]


def test_limits_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="timeouts must be positive"):
        serving.Limits(
            max_connections=1, nofile_share=1.0, header_timeout=1, body_timeout=1, write_timeout=0
        )
    with pytest.raises(ValueError, match="body budget"):
        serving.Limits(
            max_connections=1, nofile_share=1.0, header_timeout=1, body_timeout=1, body_budget=0
        )
