"""A webhook line is the event's object as sent; the sync API's record later is a second version.

Over real sockets, in the real daemon: every message event type, objects in the shapes Zoom's
webhook schema allows, their attachments fetched once from the event's URLs, the confirming
ISync's record superseding the event's, and the export showing each message once.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from archiver.export import ExportFilter, export_archive
from tests.export.helpers import csv_rows
from tests.helpers import archived_messages, manifest_lines, truth_messages
from tests.webhook.conftest import Harness, running_daemon, sign, wait_for
from tests.webhook.shapes import EVENTS, expected_record_bytes, record_bytes_in_line

# Each changes the simulator's event object into another shape Zoom documents (or may send).
VARIANTS: list[dict[str, Any]] = [
    {},
    {"owner": {"type": "callQueue", "id": "29QVgYBGRmOM5VlC0DmLgg", "team_id": "milmMfm3SYC"}},
    {"failure_reason": "1101-phone message error send"},
    {"failure_reason": ""},
    {
        "phone_number_campaign_opt_statuses": [
            {
                "consumer_phone_number": "+120970XXXXX",
                "zoom_phone_user_number": "+120971XXXXX",
                "opt_status": "pending",
                "opt_in_status": 1,
            }
        ]
    },
    {"date_time_fraction": True},  # marker, applied below: "...:43.750Z"
    {"a_field_zoom_adds_later": {"nested": ["kept", 1, None]}},
    {"message": 'emoji 😀, quotes " and a lone surrogate \ud83d'},
]


def reshaped(body: bytes, event: str, variant: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The simulator's event for a message, posted as `event` with the object changed."""
    data = json.loads(body)
    obj = data["payload"]["object"]
    changes = dict(variant)
    if changes.pop("date_time_fraction", False):
        obj["date_time"] = obj["date_time"].replace("Z", ".750Z")
    obj.update(changes)
    if event == "phone.sms_received":
        obj.pop("failure_reason", None)
    data["event"] = event
    return json.dumps(data).encode(), obj


def raw_message_lines(root: Path) -> dict[str, list[bytes]]:
    """message_id -> the raw bytes of each of its message lines, in manifest order."""
    out: dict[str, list[bytes]] = {}
    for segment in sorted((root / "manifest").glob("*.jsonl")):
        for raw in segment.read_bytes().splitlines():
            line = json.loads(raw)
            if line["kind"] == "message":
                out.setdefault(line["message_id"], []).append(raw)
    return out


async def post_shapes(harness: Harness) -> dict[tuple[str, str], dict[str, Any]]:
    """One new message per (event type, variant), in a session of its own, with 0-2
    attachments; each event posted and archived. Returns key -> the object posted."""
    posted: dict[tuple[str, str], dict[str, Any]] = {}
    for n, variant in enumerate(VARIANTS):
        for k, event in enumerate(EVENTS):
            (line,) = harness.sim.add_messages(1, new_session=True, attachments=(n + k) % 3)
            key = (line["session_id"], line["message_id"])
            body, obj = reshaped(harness.sim.webhook_event(*key), event, variant)
            status, answer = await harness.post(body, sign(body))
            assert (status, answer) == (200, {"status": "archived"}), (event, variant)
            posted[key] = obj
    return posted


async def test_each_event_type_and_shape_is_kept_as_sent_then_one_sync_version(
    tmp_path: Path,
) -> None:
    async with running_daemon(tmp_path) as harness:
        posted = await post_shapes(harness)
        # Read the instant the 200s are in: the webhook line is there, as sent minus jwts.
        raw = raw_message_lines(harness.root)
        for (session_id, message_id), obj in posted.items():
            first = json.loads(raw[message_id][0])
            assert (first["source"], first["session_id"]) == ("webhook", session_id)
            assert record_bytes_in_line(raw[message_id][0]) == expected_record_bytes(obj)
            assert "supersedes" not in first and b"jwt=" not in raw[message_id][0]

        truth = truth_messages(harness.sim)
        wanted = {
            (t["session_id"], t["message_id"], t["attachment_id"])
            for t in harness.sim.ground_truth()
            if t["kind"] == "attachment" and (t["session_id"], t["message_id"]) in posted
        }

        def settled() -> bool:
            archived = archived_messages(harness.root)
            fetched = {
                (line["session_id"], line["message_id"], line["attachment_id"])
                for line in manifest_lines(harness.root)
                if line["kind"] in ("attachment", "attachment_failed")
            }
            return all(len(archived.get(key, ())) >= 2 for key in posted) and wanted <= fetched

        await wait_for(settled, 30, "the confirming ISyncs and the downloads")
        archived = archived_messages(harness.root)
        for key in posted:
            lines = archived[key]
            # One message, two versions: the event's object, then the API's record of it.
            assert [line["source"] for line in lines] == ["webhook", "sync"], key
            assert lines[1]["supersedes"] == lines[0]["seq"]
            assert lines[1]["record"] == truth[key]
        attachment_lines = Counter(
            (line["kind"], line["session_id"], line["message_id"], line["attachment_id"])
            for line in manifest_lines(harness.root)
            if line["kind"] in ("attachment", "attachment_failed")
        )
        # Every attachment the event listed was fetched once, from the event's URL: the sync
        # version listing it again added no job, no download and no second line.
        assert wanted, "the draw gave some attachments"
        assert attachment_lines == Counter(("attachment", *key) for key in wanted)
        assert harness.sim.stats()["downloads"]["count"] == len(wanted)

        out = tmp_path / "export"
        result = export_archive(harness.root, out, ExportFilter(formats=("csv", "jsonl")))
        assert result.last_seq > 0
        rows = [row for row in csv_rows(out) if (row["session_id"], row["message_id"]) in posted]
        assert sorted((r["session_id"], r["message_id"]) for r in rows) == sorted(posted)
        assert {(r["source"], r["versions"], r["latest"]) for r in rows} == {("sync", "2", "true")}
        exported = [json.loads(line) for line in (out / "messages.jsonl").read_bytes().splitlines()]
        shown = Counter(
            (line["session_id"], line["message_id"])
            for line in exported
            if line["kind"] == "message"
        )
        assert all(shown[key] == 1 for key in posted)


async def test_an_event_for_a_message_sync_archived_adds_no_version(tmp_path: Path) -> None:
    """The API's record is authoritative: an event that comes after it (a late retry, or an
    event for history) is known, and never supersedes it, whatever its shape."""
    async with running_daemon(tmp_path) as harness:
        archived = archived_messages(harness.root)
        keys = sorted(archived)[:3]
        for key, event in zip(keys, EVENTS, strict=True):
            body, _ = reshaped(harness.sim.webhook_event(*key), event, VARIANTS[1])
            assert await harness.post(body, sign(body)) == (200, {"status": "known"})
        after = archived_messages(harness.root)
        for key in keys:
            assert [line["source"] for line in after[key]] == ["sync"]
            assert after[key] == archived[key]


# Object changes the receiver refuses (400 bad_event), as it did before objects were kept whole,
# and the two it refuses now instead of failing in the writer with a 500.
REFUSED: list[dict[str, Any]] = [
    {"session_id": ""},
    {"session_id": 7},
    {"message_id": ""},
    {"message_id": None},
    {"attachments": "x"},
    {"attachments": [{"id": ""}]},
    {"attachments": [7]},
]
NOT_JSON_VALUES = (b"NaN", b"-Infinity")


async def test_the_receiver_refuses_what_it_refused_and_no_more(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as harness:
        (line,) = harness.sim.add_messages(1, new_session=True, attachments=1)
        key = (line["session_id"], line["message_id"])
        good = harness.sim.webhook_event(*key)
        for changes in REFUSED:
            body, _ = reshaped(good, "phone.sms_received", changes)
            status, answer = await harness.post(body, sign(body))
            assert (status, answer) == (400, {"status": "bad_event"}), changes
        for value in NOT_JSON_VALUES:
            # Python's parser takes these; they are not JSON, and no canonical line holds them.
            body = good.replace(b'"message_type":', b'"message_type":' + value + b',"was":', 1)
            assert body != good
            status, answer = await harness.post(body, sign(body))
            assert (status, answer) == (400, {"status": "bad_event"}), value
        assert key not in archived_messages(harness.root)
        # The very same event, unchanged, is archived: the refusals were the checks.
        assert await harness.post(good, sign(good)) == (200, {"status": "archived"})
        assert [entry["source"] for entry in archived_messages(harness.root)[key]] == ["webhook"]
