"""Simulator throughput: sync requests per second, 250 messages each, rate limits off.

Not a test (pytest does not collect it). Run from the repository root:

    .venv/bin/python tests/simulator/throughput.py [--seconds 5] [--concurrency 16]

The simulator runs as the real `simulate` command pinned to CPU 0; this client runs pinned to
CPU 1 with several connections and reads each body without parsing it. It prints the
wall-clock rate and the rate per CPU-second of the simulator process, which is what one core
can serve even when other work shares the machine. Every 10th answer is parsed to check it
really holds 250 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import psutil

SIMULATOR_FLAGS = [
    "--sessions", "6", "--mean-messages", "600", "--busy-fraction", "0",
    "--max-messages", "3000", "--attachment-probability", "0.25",
]  # fmt: skip


async def _token(session: aiohttp.ClientSession, info: dict[str, str]) -> str:
    async with session.post(
        info["oauth_url"],
        params={"grant_type": "account_credentials", "account_id": info["account_id"]},
        headers={
            "Authorization": aiohttp.encode_basic_auth(info["client_id"], info["client_secret"])
        },
    ) as response:
        return str((await response.json())["access_token"])


async def _largest_session(session: aiohttp.ClientSession, control_url: str) -> str:
    counts: dict[str, int] = {}
    async with session.get(f"{control_url}/truth") as response:
        async for line in response.content:
            item = json.loads(line)
            if item["kind"] == "message":
                counts[item["session_id"]] = counts.get(item["session_id"], 0) + 1
    return max(counts, key=lambda sid: counts[sid])


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _run(
    info: dict[str, str], seconds: float, concurrency: int, server: psutil.Process
) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"Authorization": f"Bearer {await _token(session, info)}"}
        session_id = await _largest_session(session, info["control_url"])
        url = f"{info['api_url']}/phone/sms/sessions/{session_id}/sync?sync_type=FSync&count=250"
        done = 0
        total_bytes = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, total_bytes
            while time.perf_counter() < deadline:
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    assert response.status == 200, response.status
                done += 1
                total_bytes += len(body)
                if done % 10 == 0:
                    assert len(json.loads(body)["sms_histories"]) == 250

        start, cpu_start = time.perf_counter(), _cpu_seconds(server)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, _cpu_seconds(server) - cpu_start
        print(f"{done / cpu:,.0f} sync requests per CPU-second of the simulator")
        print(
            f"{done / elapsed:,.0f} sync requests/s of 250 messages "
            f"({total_bytes / elapsed / 1e6:,.0f} MB/s, {total_bytes / done / 1e3:,.0f} kB/answer, "
            f"{concurrency} connections, {elapsed:.1f} s)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    command = [sys.executable, "-m", "archiver", "simulate", "--json", *SIMULATOR_FLAGS]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(server.pid, {0})
            os.sched_setaffinity(0, {1})
        asyncio.run(_run(info, args.seconds, args.concurrency, psutil.Process(server.pid)))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
