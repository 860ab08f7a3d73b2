"""Generated data: deterministic from the seed, and covering what an archiver must survive."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

from archiver.simulator import Simulator, SimulatorConfig

from .conftest import running

PINNED = "2025-06-01T00:00:00Z"


def normalised(sim: Simulator) -> list[bytes]:
    return [line.replace(sim.file_url.encode(), b"FILE") for line in sim.truth_lines()]


async def test_same_seed_same_bytes_other_seed_other_data() -> None:
    async with running(anchor=PINNED) as one, running(anchor=PINNED) as two:
        assert normalised(one) == normalised(two)
    async with running(anchor=PINNED, seed=2) as other:
        mine, theirs = set(normalised(one)), set(normalised(other))
        assert not mine & theirs


async def test_more_sessions_keep_the_first_ones_unchanged() -> None:
    async with running(anchor=PINNED) as few, running(anchor=PINNED, sessions=9) as more:
        assert normalised(few) == normalised(more)[: len(normalised(few))]


async def test_large_attachments_change_only_their_sizes() -> None:
    async with (
        running(anchor=PINNED) as plain,
        running(anchor=PINNED, large_attachments=2, large_attachment_bytes=5_000_000) as large,
    ):
        before, after = list(plain.ground_truth()), list(large.ground_truth())
    assert len(before) == len(after)
    changed = [b for a, b in zip(before, after, strict=True) if a.get("size") != b.get("size")]
    assert [line["size"] for line in changed] == [5_000_000, 5_000_000]


async def test_the_default_account_covers_every_case() -> None:
    async with Simulator(SimulatorConfig()) as sim:
        lines = list(sim.ground_truth())
        sessions = sim._state.sessions
    messages = [line["record"] for line in lines if line["kind"] == "message"]
    attachments = [att for m in messages for att in m.get("attachments", [])]
    assert {m["message_type"] for m in messages} == {1, 2, 3, 4, 5, 6}
    assert {m["direction"] for m in messages} == {"In", "Out"}
    assert {m["delivery_status"] for m in messages} >= {"received", "delivered", "failed_to_send"}
    assert {a["type"] for a in attachments} == {"OTHER", "PNG", "GIF", "JPG", "AUDIO", "VIDEO"}
    assert {s.session_type for s in sessions} == {
        "user",
        "call_queue",
        "auto_receptionist",
        "service_endpoint",
    }
    names = {a["name"] for a in attachments}
    for hostile in ("../../etc/passwd", "/abs/path/photo.jpg", "evil\x00.jpg", "\u202egnp.jpg"):
        assert hostile in names
    assert any(len(name.encode()) >= 298 for name in names)
    # The same attachment id on two messages, as in Zoom's own example.
    uses = Counter(a["id"] for a in attachments)
    assert any(n > 1 for n in uses.values())
    assert sum(1 for line in lines if line["kind"] == "attachment") == len(uses)
    assert max(len(m.get("attachments", [])) for m in messages) <= 10
    sizes = [a["size"] for a in attachments]
    assert min(sizes) <= 15 and max(sizes) <= SimulatorConfig().max_attachment_bytes
    texts = " ".join(m["message"] for m in messages)
    assert any(ord(ch) > 0xFFFF for ch in texts)  # emoji and other astral characters
    assert any("\u0590" <= ch <= "\u06ff" for ch in texts)  # right-to-left scripts
    group = [m for m in messages if m["message_type"] in (3, 4)]
    assert group and all(len(m["to_members"]) >= 2 for m in group)
    assert all("owner" in m["sender"] for m in messages if m["direction"] == "Out")
    sizes_per_session = sorted(len(s.messages) for s in sessions)
    assert sizes_per_session[0] < 20 and sizes_per_session[-1] >= 100


async def test_times_are_unique_per_session_and_shown_in_seconds() -> None:
    async with running() as sim:
        sessions = sim._state.sessions
        records = {
            line["message_id"]: line["record"]
            for line in sim.ground_truth()
            if line["kind"] == "message"
        }
    same_second = 0
    for session in sessions:
        times = session.times
        assert all(a < b for a, b in itertools.pairwise(times))
        shown = [records[m.message_id]["date_time"] for m in session.messages]
        assert shown == sorted(shown)
        same_second += sum(a == b for a, b in itertools.pairwise(shown))
    assert same_second > 0, "bursts put several messages inside one second"


async def test_truth_lines_are_canonical_json() -> None:
    async with running() as sim:
        for raw in sim.truth_lines():
            assert raw.endswith(b"\n") and raw.count(b"\n") == 1
            line: dict[str, Any] = json.loads(raw)
            assert line["kind"] in ("message", "attachment")
            if line["kind"] == "message":
                assert line["record"]["message_id"] == line["message_id"]
                for att in line["record"].get("attachments", []):
                    assert "?" not in att["download_url"]
                    assert att["download_url"] == f"{sim.file_url}/file/download/{att['id']}"
