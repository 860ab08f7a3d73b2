"""A webhook line and the sync line that supersedes it are one message in every output.

Written with the real ManifestWriter: the event's object as Zoom sends it (its own shape: no
`direction`, members with `id`/`type`, lower-case attachment types), then the sync API's record
of the same message, then a message known only from its event so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from archiver.export.files import session_file
from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.export.helpers import csv_rows, export

URL = "https://file.zoom.us/file/download/att1?jwt=secret.token.here"


def event_object(message_id: str, text: str) -> dict[str, Any]:
    return {
        "session_id": "S1",
        "message_id": message_id,
        "date_time": "2024-05-01T10:00:00Z",
        "message": text,
        "message_type": 2,
        "sender": {"phone_number": "+12055550100", "id": "U1", "type": "user"},
        "to_members": [
            {"phone_number": "+12055550199", "display_name": "Bob", "is_message_owner": True}
        ],
        "owner": {"type": "callQueue", "id": "Q1", "team_id": "T1"},
        "attachments": [
            {"id": "att1", "size": 3, "name": "pic.jpg", "type": "jpg", "download_url": URL}
        ],
    }


def api_record(message_id: str, text: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "date_time": "2024-05-01T10:00:00Z",
        "direction": "In",
        "message": text,
        "message_type": 2,
        "delivery_status": "received",
        "sender": {"phone_number": "+12055550100", "owner": {"id": "U1", "type": "user"}},
        "to_members": [{"phone_number": "+12055550199", "display_name": "Bob"}],
        "attachments": [
            {"id": "att1", "size": 3, "name": "pic.jpg", "type": "JPG", "download_url": URL}
        ],
    }


async def write_archive(root: Path) -> dict[str, int]:
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        hooked = await writer.append_messages("S1", [event_object("m1", "hello")], "webhook")
        synced = await writer.append_messages("S1", [api_record("m1", "hello")], "sync")
        only = await writer.append_messages("S1", [event_object("m2", "just now")], "webhook")
    finally:
        await writer.close()
        state.close()
    assert (hooked.new, synced.changed, only.new) == (1, 1, 1)
    return {"m1_webhook": hooked.seqs[0], "m1_sync": synced.seqs[0], "m2": only.seqs[0]}


async def test_one_message_per_id_the_newest_version(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    seqs = await write_archive(root)

    out = tmp_path / "out"
    result = export(root, out)
    assert result.counts["messages"] == 2 and result.counts["message_lines"] == 2
    rows = csv_rows(out)
    assert [row["message_id"] for row in rows] == ["m1", "m2"]
    m1, m2 = rows
    assert (m1["seq"], m1["source"], m1["supersedes"]) == (
        str(seqs["m1_sync"]),
        "sync",
        str(seqs["m1_webhook"]),
    )
    assert (m1["direction"], m1["versions"], m1["latest"]) == ("In", "2", "true")
    # Known only from its event: shown as Zoom sent it; no direction or status is invented.
    assert (m2["source"], m2["direction"], m2["delivery_status"]) == ("webhook", "", "")
    assert (m2["sender_number"], m2["attachment_types"]) == ("'+12055550100", "jpg")
    page = (out / session_file("S1")).read_text(encoding="utf-8")
    assert page.count('<article class="msg') == 2
    assert "secret" not in page
    exported = [json.loads(line) for line in (out / "messages.jsonl").read_bytes().splitlines()]
    assert [line["seq"] for line in exported] == [seqs["m1_sync"], seqs["m2"]]

    every = tmp_path / "every"
    result = export(root, every, all_versions=True)
    assert result.counts["messages"] == 2 and result.counts["message_lines"] == 3
    versions = [(r["message_id"], r["source"], r["latest"]) for r in csv_rows(every)]
    assert versions == [
        ("m1", "webhook", "false"),
        ("m1", "sync", "true"),
        ("m2", "webhook", "true"),
    ]

    # The filter judges a message by its newest version: the event's object has no direction.
    inbound = tmp_path / "inbound"
    export(root, inbound, direction="in")
    assert [row["message_id"] for row in csv_rows(inbound)] == ["m1"]
