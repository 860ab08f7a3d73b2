"""SessionGate: a sync page committed between the receiver's check and its write cannot be
superseded by the (older) webhook version."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from archiver.webhook.gate import SessionGate
from tests.helpers import archived_messages

API = {"message_id": "m1", "direction": "Out", "delivery_status": "delivered", "message": "hi"}
EVENT = {**API, "delivery_status": "sent"}  # what phone.sms_sent could say of it


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[tuple[State, ManifestWriter]]:
    prepare_root(tmp_path)
    state = State.open(tmp_path)
    writer = await ManifestWriter.open(tmp_path, state)
    try:
        yield state, writer
    finally:
        await writer.close()
        state.close()


def sources(root: Path) -> list[Any]:
    return [(line["source"], line["record"]) for line in archived_messages(root)[("s", "m1")]]


async def test_without_the_gate_a_late_event_supersedes_the_api(
    tmp_path: Path, archive: tuple[State, ManifestWriter]
) -> None:
    # The receiver's check and write as two steps, with a sync page committed in between:
    # the problem the gate exists for.
    state, writer = archive
    sync = asyncio.create_task(writer.append_messages("s", [API], "sync"))
    await asyncio.sleep(0)  # the page is queued in the writer, not yet indexed
    assert not state.has_message("s", "m1")
    await writer.append_messages("s", [EVENT], "webhook")
    await sync
    assert sources(tmp_path) == [("sync", API), ("webhook", EVENT)]


async def test_with_the_gate_the_api_version_stays_the_latest(
    tmp_path: Path, archive: tuple[State, ManifestWriter]
) -> None:
    state, writer = archive
    gate = SessionGate(writer)
    sync = asyncio.create_task(gate.append_messages("s", [API], "sync"))
    await asyncio.sleep(0)
    result = await gate.append_if_new("s", EVENT, "webhook", state.has_message)
    await sync
    assert result is None
    assert sources(tmp_path) == [("sync", API)]
    assert gate.sessions_held == 0


async def test_with_the_gate_an_event_first_is_superseded_by_the_api(
    tmp_path: Path, archive: tuple[State, ManifestWriter]
) -> None:
    state, writer = archive
    gate = SessionGate(writer)
    webhook = asyncio.create_task(gate.append_if_new("s", EVENT, "webhook", state.has_message))
    await asyncio.sleep(0)
    await gate.append_messages("s", [API], "sync")
    assert (await webhook) is not None
    assert sources(tmp_path) == [("webhook", EVENT), ("sync", API)]


async def test_other_sessions_do_not_wait_and_locks_do_not_pile_up(
    archive: tuple[State, ManifestWriter],
) -> None:
    state, writer = archive
    gate = SessionGate(writer)
    records = [{"message_id": f"m{n}", "message": str(n)} for n in range(50)]
    await asyncio.gather(
        *(gate.append_messages(f"s{n % 7}", [r], "sync") for n, r in enumerate(records)),
        *(
            gate.append_if_new(f"s{n % 7}", r, "webhook", state.has_message)
            for n, r in enumerate(records)
        ),
    )
    assert gate.sessions_held == 0
    assert gate.seq == writer.seq == 50
