"""The bucket goes away mid-run (the server stopped) and comes back on the same port.

Archiving goes on while it is gone, the lag shows in `/metrics`, and the backlog drains when
it returns, with nothing duplicated: the chunks chain with no overlap, every key has one
version, and the rebuilt segments are the local ones byte for byte (up to the `stop` line the
daemon writes after its replicator has stopped).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from archiver import daemon
from archiver.replica.bucket import ChunkKey, parse_key
from archiver.simulator import Simulator, SimulatorConfig
from tests.helpers import load, manifest_lines, write_config
from tests.replica.rig import list_keys, local_segments, replica_section, segments_from_bucket
from tests.replica.seaweed import SeaweedS3

PREFIX = "acme/"
WAIT = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url) as answer:
        text = await answer.text()
    found: dict[str, float] = {}
    for name, value in re.findall(r"^(zsa_replica_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M):
        found[name] = found.get(name, 0.0) + float(value)
    return found


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


def _head(root: Path) -> int:
    return max((line["seq"] for line in manifest_lines(root)), default=0)


@pytest.mark.whole_run
@pytest.mark.parametrize(
    "down_for", [pytest.param(3.0, id="3s"), pytest.param(30.0, id="30s", marks=pytest.mark.slow)]
)
async def test_bucket_down_mid_run_archiving_goes_on_and_the_backlog_drains(
    tmp_path: Path, own_s3: SeaweedS3, down_for: float
) -> None:
    bucket = await own_s3.acreate_bucket("outage", lock=True)
    port = _free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    root = tmp_path / "archive"
    sim_config = SimulatorConfig(seed=7, sessions=4, history_days=10, attachment_probability=0.3)
    async with Simulator(sim_config) as sim, aiohttp.ClientSession() as http:
        extra = replica_section(own_s3, bucket, tmp_path, max_lag=2, chunk_max_bytes=65536)
        path = write_config(tmp_path, sim, extra=extra, metrics_listen=f"127.0.0.1:{port}")
        stop = asyncio.Event()
        run = asyncio.create_task(daemon.run(load(path), once=False, stop=stop))

        async def caught_up() -> bool:
            if run.done():
                run.result()
            try:
                m = await _metrics(http, metrics)
            except aiohttp.ClientError:
                return False
            head = _head(root) if root.exists() else 0
            return head > 1 and m.get("zsa_replica_seq") == head

        await _until(caught_up, "the first replication")
        await asyncio.to_thread(own_s3.stop)
        downed = time.monotonic()
        before = _head(root)
        added = sim.add_messages(12, attachments=1)
        ids = {line["message_id"] for line in added}

        async def archived_and_behind() -> bool:
            m = await _metrics(http, metrics)
            failures = sum(v for k, v in m.items() if k.startswith("zsa_replica_failures"))
            return _head(root) > before and m["zsa_replica_lines_behind"] > 0 and failures > 0

        await _until(archived_and_behind, "archiving to go on with the lag shown")
        lag = await _metrics(http, metrics)
        assert lag["zsa_replica_lag_seconds"] > 0
        # A bucket that is down is a connection failure: a fixed label, never an error text.
        reasons = {k for k in lag if k.startswith("zsa_replica_failures")}
        assert reasons == {'zsa_replica_failures_total{reason="connection"}'}, reasons
        await asyncio.sleep(max(0.0, down_for - (time.monotonic() - downed)))
        await asyncio.to_thread(own_s3.start)
        await _until(caught_up, "the backlog to drain")
        stop.set()
        outcome = await run
    assert not outcome.failed_sessions
    assert ids <= {line.get("message_id") for line in manifest_lines(root)}
    async with own_s3.client() as c:
        keys = await list_keys(c, bucket, PREFIX)
        chunks = sorted(
            (p for k in keys if isinstance(p := parse_key(PREFIX, k), ChunkKey)),
            key=lambda p: p.first,
        )
        for earlier, later in itertools.pairwise(chunks):
            assert later.first == earlier.last + 1, (earlier, later)  # no gap, no overlap
        versions = await c.list_object_versions(Bucket=bucket, Prefix=PREFIX)
        assert len(versions.get("Versions", [])) == len(keys)
        assert not versions.get("DeleteMarkers")
        rebuilt = await segments_from_bucket(c, bucket, PREFIX)
    local = local_segments(root)
    last = max(local)
    assert {n: b for n, b in local.items() if n != last} == {
        n: b for n, b in rebuilt.items() if n != last
    }
    tail = local[last][len(rebuilt[last]) :]
    assert local[last].startswith(rebuilt[last]) and tail.count(b"\n") == 1  # the stop line
    assert b'"event":"stop"' in tail
