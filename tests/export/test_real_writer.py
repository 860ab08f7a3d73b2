"""The export reads what the archiver really writes: an archive made by ManifestWriter.

The other export tests write the format by hand (the public contract); this one ties the two
together, so a drift between the writer and the reader shows up here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from archiver.export.files import session_file
from archiver.store.layout import blob_relpath, prepare_root
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.export.archive import png
from tests.export.helpers import check_hashes, csv_rows, export


def record(
    message_id: str, text: str, attachments: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "date_time": f"2024-05-01T10:00:{int(message_id[1:]):02d}Z",
        "direction": "In",
        "message": text,
        "message_type": 2 if attachments else 1,
        "delivery_status": "received",
        "sender": {"phone_number": "+12055550100", "display_name": "Alice"},
        "to_members": [{"phone_number": "+12055550199", "display_name": "Bob"}],
        "attachments": attachments or [],
    }


async def test_export_of_a_written_archive(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state, segment_max_bytes=900)
    image = png()
    sha = hashlib.sha256(image).hexdigest()
    try:
        await writer.append_event("start")
        picture = {
            "id": "att1",
            "name": "../../pic.png",
            "size": len(image),
            "type": "PNG",
            "download_url": "https://file.zoom.us/file/download/att1?jwt=secret.token.here",
        }
        await writer.append_messages(
            "S1", [record("m1", "hello"), record("m2", "look", [picture])], "sync"
        )
        (root / blob_relpath(sha)).parent.mkdir(parents=True, exist_ok=True)
        (root / blob_relpath(sha)).write_bytes(image)
        await writer.append_entries(
            [
                {
                    "kind": "attachment",
                    "session_id": "S1",
                    "message_id": "m2",
                    "attachment_id": "att1",
                    "name": "../../pic.png",
                    "type": "PNG",
                    "size": len(image),
                    "sha256": sha,
                    "blob": blob_relpath(sha),
                }
            ]
        )
        await writer.append_messages("S1", [record("m1", "hello, edited")], "webhook")
        await writer.append_messages("S2", [record("m3", "elsewhere")], "sync")
        seq, head = writer.seq, writer.head
    finally:
        await writer.close()
        state.close()
    assert verify_archive(root).ok
    assert len(list((root / "manifest").iterdir())) > 1  # the export crosses segments

    out = tmp_path / "out"
    result = export(root, out, sessions=("S1",))
    assert (result.last_seq, result.head) == (seq, head)
    check_hashes(out)
    rows = {row["message_id"]: row for row in csv_rows(out)}
    assert rows["m1"]["text"] == "hello, edited" and rows["m1"]["versions"] == "2"
    assert rows["m2"]["attachment_sha256"] == sha and "m3" not in rows
    page = (out / session_file("S1")).read_text()
    assert f'<img src="../files/{sha}.png"' in page and "secret" not in page

    manifest_lines = {
        json.loads(line)["seq"]: line
        for segment in sorted((root / "manifest").iterdir())
        for line in segment.read_bytes().splitlines()
    }
    exported = (out / "messages.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["kind"] for line in exported] == ["message", "attachment", "message"]
    for line in exported:
        assert manifest_lines[json.loads(line)["seq"]] == line
