"""The record a webhook line keeps is the event's `payload.object` as Zoom sent it, minus jwts.

Zoom's own examples, objects drawn from Zoom's webhook schema and written through the real
manifest writer, the refusal table, and the simulator's events.
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from archiver.webhook.records import MESSAGE_EVENTS, EventError, event_message
from tests.helpers import manifest_lines, truth_messages
from tests.webhook.shapes import (
    canonical_bytes,
    expected_record_bytes,
    record_bytes_in_line,
    schema_shaped_events,
    without_jwt,
)

# Zoom's webhook OpenAPI, vendored in the repository (tests/data/zoom/README.md says whence).
WEBHOOK_OPENAPI = (
    Path(__file__).resolve().parents[1] / "data" / "zoom" / "phone-sms-webhooks-openapi.json"
)


@cache
def webhook_spec() -> dict[str, Any]:
    return dict(json.loads(WEBHOOK_OPENAPI.read_text(encoding="utf-8")))


def zoom_example(event: str) -> dict[str, Any]:
    content = webhook_spec()["webhooks"][event]["post"]["requestBody"]["content"]
    return dict(json.loads(content["application/json"]["examples"]["json-example"]["value"]))


def relaxed_schema(event: str) -> dict[str, Any]:
    """Zoom's schema for `event`, without the enums of member and owner `type`.

    Those enums leave out types the API itself returns (sharedLineGroup, serviceEndpoint) and
    allow only "user" where a queue is a member; everything else (required keys, types, no
    unknown keys) is checked as Zoom wrote it.
    """
    content = webhook_spec()["webhooks"][event]["post"]["requestBody"]["content"]
    schema = copy.deepcopy(content["application/json"]["schema"])

    def drop_type_enums(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and isinstance(props.get("type"), dict):
                props["type"].pop("enum", None)
            for value in node.values():
                drop_type_enums(value)
        elif isinstance(node, list):
            for value in node:
                drop_type_enums(value)

    drop_type_enums(schema)
    return dict(schema)


@pytest.mark.parametrize("event", sorted(MESSAGE_EVENTS))
def test_zooms_examples_are_kept_as_sent(event: str) -> None:
    example = zoom_example(event)
    sent = copy.deepcopy(example["payload"]["object"])
    session_id, record = event_message(example["event"], example["payload"])
    assert session_id == "e5e9b8417c1f2da2cd3006f3d9d4641a"
    assert canonical_bytes(record) == canonical_bytes(sent)
    # Nothing invented, nothing dropped, nothing respelled.
    assert "direction" not in record and "delivery_status" not in record
    assert record["session_id"] == session_id and record["owner"] == sent["owner"]
    assert (
        record["phone_number_campaign_opt_statuses"] == sent["phone_number_campaign_opt_statuses"]
    )
    assert record["sender"]["id"] == "RMIGplfpSLauTMDMTi3Kfg" and "owner" not in record["sender"]
    assert record["attachments"][0]["type"] == "jpg"
    if event != "phone.sms_received":
        assert record["failure_reason"] == "1101-phone message error send"


async def test_objects_in_every_schema_shape_are_stored_as_sent_minus_jwt(tmp_path: Path) -> None:
    """300 objects drawn from Zoom's schema, through `event_message` and the real writer: each
    line's record is, byte for byte, the canonical JSON of the object without its jwts."""
    events = list(schema_shaped_events(seed=14, n=300))
    validators = {name: jsonschema.Draft7Validator(relaxed_schema(name)) for name in MESSAGE_EVENTS}
    root = tmp_path / "archive"
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    expected: dict[tuple[str, str], bytes] = {}
    try:
        for name, event in events:
            validators[name].validate(event)  # the shape is one Zoom's schema allows
            sent = copy.deepcopy(event["payload"]["object"])
            session_id, record = event_message(name, event["payload"])
            assert record == sent  # handed on whole: the download queue needs the jwts
            result = await writer.append_messages(session_id, [record], "webhook")
            assert result.new == 1
            assert record == sent  # and the writer stripped a copy, not the caller's object
            expected[(session_id, sent["message_id"])] = expected_record_bytes(sent)
    finally:
        await writer.close()
        state.close()
    raw_lines = [
        line
        for segment in sorted((root / "manifest").glob("*.jsonl"))
        for line in segment.read_bytes().splitlines()
    ]
    stored = {}
    for raw, line in zip(raw_lines, manifest_lines(root), strict=True):
        if line["kind"] == "message":
            assert line["source"] == "webhook" and "supersedes" not in line
            stored[(line["session_id"], line["message_id"])] = record_bytes_in_line(raw)
            assert line["digest"] == hashlib.sha256(record_bytes_in_line(raw)).hexdigest()
    assert stored == expected
    shapes = [event["payload"]["object"] for _, event in events]
    # The draw covered what matters: jwts to strip, lower-case types, the optional parts.
    assert sum(b"jwt" in canonical_bytes(o).lower() for o in shapes) > 50
    assert not any(b"jwt=" in raw.lower() for raw in raw_lines)
    assert any("failure_reason" in o for o in shapes) and any(
        "team_id" in o["owner"] for o in shapes
    )
    assert any("phone_number_campaign_opt_statuses" in o for o in shapes)
    assert any(a["type"] == "jpg" for o in shapes for a in o["attachments"])


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"attachments": None},  # kept as sent; nothing to download
        {"to_members": "not a list"},  # not ours to judge: archived as Zoom sent it
        {"sender": "someone"},
        {"date_time": "soon"},
        {"future_field": {"nested": [1, 2.5, True, None]}},  # outside the schema, still kept
        {"message_id": "M\u00e9", "session_id": "S\u00e9"},
        {"attachments": [{"id": "A", "type": "heic", "download_url": "https://x.zoom.us/f?jwt=t"}]},
    ],
)
def test_objects_accepted_before_are_accepted_and_kept_whole(changes: dict[str, Any]) -> None:
    obj = {**OBJ, **changes}
    session_id, record = event_message("phone.sms_received", {"object": copy.deepcopy(obj)})
    assert session_id == obj["session_id"] and record == obj


OBJ: dict[str, Any] = {
    "session_id": "S",
    "message_id": "M",
    "date_time": "2024-05-01T10:00:00Z",
    "message": "hi",
    "message_type": 1,
    "sender": {"phone_number": "1"},
    "to_members": [{"phone_number": "2", "is_message_owner": True}],
    "owner": {"type": "user", "id": "U"},
    "attachments": [],
}
DEEP: Any = 0
for _ in range(5000):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    ("event", "payload", "problem"),
    [
        ("phone.sms_etiquette_warn", {"object": OBJ}, "not a message event"),
        ("phone.sms_campaign_number_opt_in", {"object": OBJ}, "not a message event"),
        ("phone.sms_received", {}, "payload.object is not an object"),
        ("phone.sms_received", [], "payload.object is not an object"),
        ("phone.sms_received", {"object": [OBJ]}, "payload.object is not an object"),
        ("phone.sms_received", {"object": {**OBJ, "session_id": ""}}, "no session_id"),
        ("phone.sms_received", {"object": {**OBJ, "session_id": 7}}, "no session_id"),
        ("phone.sms_received", {"object": {**OBJ, "message_id": 7}}, "no message_id"),
        ("phone.sms_sent", {"object": {**OBJ, "message_id": ""}}, "no message_id"),
        ("phone.sms_sent", {"object": {**OBJ, "message_id": "\ud800"}}, "lone surrogate"),
        ("phone.sms_received", {"object": {**OBJ, "attachments": "x"}}, "not a list"),
        ("phone.sms_received", {"object": {**OBJ, "attachments": [{"id": ""}]}}, "has no id"),
        ("phone.sms_sent_failed", {"object": {**OBJ, "attachments": [7]}}, "has no id"),
    ],
)
def test_events_that_do_not_fit(event: str, payload: Any, problem: str) -> None:
    with pytest.raises(EventError, match=problem):
        event_message(event, payload)


@pytest.mark.parametrize(
    "changes",
    [
        {"message_type": float("nan")},
        {"owner": {"type": "user", "id": "U", "score": float("inf")}},
        {"future_field": DEEP},
    ],
)
def test_objects_the_manifest_cannot_hold_are_refused_not_failed(changes: dict[str, Any]) -> None:
    """NaN and Infinity are not JSON (Python's parser takes them), and nesting too deep to
    encode: refused as a bad event (400), rather than failing in the writer (a 500)."""
    with pytest.raises(EventError):
        event_message("phone.sms_received", {"object": {**OBJ, **changes}})


async def test_simulator_events_fit_zooms_schema_and_are_kept_as_sent() -> None:
    config = SimulatorConfig(seed=3, sessions=8, history_days=30, webhook_url="")
    async with Simulator(config) as sim:
        added = sim.add_messages(150, attachments=None)
        truth = truth_messages(sim)
        for line in added:
            key = (line["session_id"], line["message_id"])
            event = json.loads(sim.webhook_event(*key))
            jsonschema.Draft7Validator(relaxed_schema(event["event"])).validate(event)
            sent = copy.deepcopy(event["payload"]["object"])
            session_id, record = event_message(event["event"], event["payload"])
            assert session_id == key[0] and record == sent
            # The same message as the API's record, in the event's own shape: a second version
            # of the message once the sync API returns it, never the same digest.
            api = truth[key]
            assert without_jwt(record) != api and "direction" not in record
            for field in ("message_id", "date_time", "message", "message_type"):
                assert record[field] == api[field]
            assert [a["id"] for a in record["attachments"]] == [
                a["id"] for a in api.get("attachments", [])
            ]
        assert any(truth[k].get("attachments") for k in truth)
