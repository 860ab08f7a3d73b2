"""Writer throughput (slow: `make soak`): 100k Zoom-shaped messages in pages of 250.

The daemon's budget is >= 20,000 messages per CPU-second end to end, so the writer, one part
of that path, must stay well above it. Prints the measured rates (`pytest -s -m slow`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from archiver.store.state import State
from archiver.store.writer import ManifestWriter

N, PAGE = 100_000, 250


def record(i: int) -> dict[str, Any]:
    """About 500 bytes of JSON, like a Zoom SMS; one in ten an MMS with a jwt to strip."""
    attachments = [
        {
            "id": f"att{i}",
            "name": "photo.png",
            "size": 1234,
            "type": "PNG",
            "download_url": f"https://file.zoom.us/file/download/att{i}?jwt=eyJhbGciOi.eyJleHAi.sig",
        }
    ]
    return {
        "message_id": f"IQ-msg{i:09d}abcdefgh",
        "date_time": "2024-03-01T10:00:00Z",
        "direction": "In",
        "message": f"Hello there, this is message number {i} with some ordinary text 😀",
        "message_type": 2 if i % 10 == 0 else 1,
        "delivery_status": "delivered",
        "sender": {"phone_number": "+15550100", "display_name": "Alice", "owner": {"id": "u1"}},
        "to_members": [{"phone_number": "+15550101", "display_name": "Bob"}],
        **({"attachments": attachments} if i % 10 == 0 else {}),
    }


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 8])
async def test_writer_throughput(root: Path, state: State, workers: int) -> None:
    writer = await ManifestWriter.open(root, state)
    records = [record(i) for i in range(N)]
    pages = [records[s : s + PAGE] for s in range(0, N, PAGE)]

    async def worker(k: int) -> None:
        for page in pages[k::workers]:
            await writer.append_messages(f"session-{k}", page, "sync")

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(k) for k in range(workers)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await writer.close()
    assert writer.seq == N
    print(
        f"\n{workers} caller(s): {N / wall:,.0f} msg/s wall, {N / cpu:,.0f} msg/CPU-s "
        f"({cpu / N * 1e6:.1f} us/msg)"
    )
    assert N / cpu > 20_000
