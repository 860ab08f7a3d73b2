"""Fixtures for the webhook tests: the real daemon with its receiver, against the simulator.

Signing here is written out again with `hmac` rather than imported from the archiver or the
simulator, so a mistake shared by both sides cannot make the tests pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from tests.helpers import archived_messages, load, truth_messages, write_config

SECRET = "webhook-secret-token-for-tests"
SHORT_RETRIES = "0.3,0.8,1.5,3,5"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign(body: bytes, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:%s:%s" % (stamp.encode(), body), hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "x-zm-request-timestamp": stamp,
        "x-zm-signature": f"v0={digest.hexdigest()}",
    }


def sim_config(**changes: Any) -> SimulatorConfig:
    base = SimulatorConfig(
        seed=41,
        sessions=6,
        history_days=60,
        mean_messages=8.0,
        busy_fraction=0.0,
        attachment_probability=0.0,
        webhook_secret=SECRET,
        webhook_retry_schedule=SHORT_RETRIES,
    )
    return dataclasses.replace(base, **changes)


def webhook_config(
    tmp_path: Path, sim: Simulator, port: int, *, sync: str = "", metrics_listen: str = ""
) -> Path:
    secret = tmp_path / "webhook_secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return write_config(
        tmp_path,
        sim,
        sync=sync,
        metrics_listen=metrics_listen,
        extra=f"""
[webhook]
enabled = true
listen = "127.0.0.1:{port}"
path = "/zoom/webhook"
secret_token_file = "{secret}"
max_body_bytes = 65536
""",
    )


async def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str = "",
    task: asyncio.Future[Any] | None = None,
) -> None:
    """Poll `predicate`; fail after `timeout`, or at once if `task` (the daemon) ended."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if task is not None and task.done():
            raise AssertionError(f"the daemon ended while waiting for {what}: {task.result()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.05)


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Harness:
    sim: Simulator
    root: Path
    url: str
    http: aiohttp.ClientSession

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.post(self.url, data=body, headers=headers) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)

    def lines_for(self, message_id: str) -> list[dict[str, Any]]:
        return [
            line
            for (_, mid), lines in archived_messages(self.root).items()
            if mid == message_id
            for line in lines
        ]


@asynccontextmanager
async def running_daemon(
    tmp_path: Path,
    *,
    sync: str = "poll_interval = 3600",
    events: bool = False,
    metrics_listen: str = "",
    **sim_changes: Any,
) -> AsyncIterator[Harness]:
    """Simulator + in-process daemon with its receiver; yields once the history is archived.

    `events`: the simulator posts an event for every message added (else tests post by hand).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/zoom/webhook"
    async with Simulator(sim_config(**sim_changes)) as sim:
        path = webhook_config(tmp_path, sim, port, sync=sync, metrics_listen=metrics_listen)
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(load(path), once=False, stop=stop))
        root = tmp_path / "archive"
        try:
            await wait_for(lambda: accepts(port), 30, "the receiver", runner)
            await wait_for(
                lambda: len(archived_messages(root)) >= len(truth_messages(sim)),
                30,
                "history archived",
                runner,
            )
            if events:
                sim.set_switches(webhook_url=url)
            async with aiohttp.ClientSession() as http:
                yield Harness(sim, root, url, http)
        finally:
            stop.set()
            outcome = await asyncio.wait_for(runner, 30)
        assert outcome.ok, outcome.failed_sessions
