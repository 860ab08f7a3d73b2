"""An event's message in the sync API's shape: Zoom's own examples, tables, and the simulator."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.manifest import strip_jwt
from archiver.webhook.records import EventError, event_message, sync_shaped
from tests.helpers import truth_messages

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


def test_zooms_received_example_in_the_sync_shape() -> None:
    event = zoom_example("phone.sms_received")
    session_id, record = event_message(event["event"], event["payload"])
    assert session_id == "e5e9b8417c1f2da2cd3006f3d9d4641a"
    assert record == {
        "message_id": "72abd192-97ee-4ddb-b498-85048f4c34d7",
        "date_time": "2021-07-19T18:43:43Z",
        "direction": "In",
        "delivery_status": "received",
        "message": "ttt",
        "message_type": 1,
        "sender": {
            "phone_number": "12132822256",
            "display_name": "Jackson",
            "owner": {"id": "RMIGplfpSLauTMDMTi3Kfg", "type": "user"},
        },
        "to_members": [
            {
                "phone_number": "12132792348",
                "display_name": "Tomcat",
                "owner": {"id": "RMITfuhuuxyzyuyyi3Kfg", "type": "user"},
            }
        ],
        "attachments": [
            {
                "id": "ux7LtGDPRmqbo0nLQ2v9jQ",
                "name": "Screenshot2021_05_17_183842.jpg",
                "size": 10692,
                "type": "JPG",
                "download_url": "https://downloadUrl.zoom.us",
            }
        ],
    }


@pytest.mark.parametrize(
    ("event", "direction", "status"),
    [
        ("phone.sms_received", "In", "received"),
        # Zoom's phone.sms_sent example carries a failure_reason: a failed send.
        ("phone.sms_sent", "Out", "failed_to_send"),
        ("phone.sms_sent_failed", "Out", "failed_to_send"),
    ],
)
def test_zooms_examples_direction_and_status(event: str, direction: str, status: str) -> None:
    example = zoom_example(event)
    _, record = event_message(example["event"], example["payload"])
    assert (record["direction"], record["delivery_status"]) == (direction, status)
    assert "session_id" not in record and "owner" not in record
    assert "failure_reason" not in record and "phone_number_campaign_opt_statuses" not in record


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


@pytest.mark.parametrize(
    ("event", "changes", "expected"),
    [
        ("phone.sms_sent", {}, {"direction": "Out", "delivery_status": "sent"}),
        (
            "phone.sms_sent",
            {"failure_reason": ""},  # Zoom: empty means the send succeeded
            {"direction": "Out", "delivery_status": "sent"},
        ),
        ("phone.sms_received", {}, {"direction": "In", "delivery_status": "received"}),
        ("phone.sms_received", {"date_time": "2024-05-01T10:00:00.750Z"}, {}),
        ("phone.sms_received", {"date_time": "2024-05-01T12:00:00+02:00"}, {}),
        ("phone.sms_received", {"date_time": "soon"}, {"date_time": "soon"}),
        (
            "phone.sms_received",
            {"sender": {"phone_number": "1", "id": "X", "type": "callQueue", "extra": 1}},
            {"sender": {"phone_number": "1", "owner": {"id": "X", "type": "callQueue"}}},
        ),
        (
            "phone.sms_received",
            {"attachments": [{"id": "A", "type": "jpeg", "size": 1, "name": "n"}]},
            {"attachments": [{"id": "A", "type": "JPG", "size": 1, "name": "n"}]},
        ),
        (
            "phone.sms_received",
            {"attachments": [{"id": "A", "type": "heic"}]},
            {"attachments": [{"id": "A", "type": "heic"}]},  # unknown: kept as received
        ),
    ],
)
def test_sync_shaped(event: str, changes: dict[str, Any], expected: dict[str, Any]) -> None:
    record = sync_shaped(event, {**OBJ, **changes})
    want = {
        "message_id": "M",
        "date_time": "2024-05-01T10:00:00Z",
        "direction": "In",
        "delivery_status": "received",
        "message": "hi",
        "message_type": 1,
        "sender": {"phone_number": "1"},
        "to_members": [{"phone_number": "2"}],
        **expected,
    }
    assert record == want


@pytest.mark.parametrize(
    ("event", "payload", "problem"),
    [
        ("phone.sms_etiquette_warn", {"object": OBJ}, "not a message event"),
        ("phone.sms_received", {}, "payload.object is not an object"),
        ("phone.sms_received", {"object": [OBJ]}, "payload.object is not an object"),
        ("phone.sms_received", {"object": {**OBJ, "session_id": ""}}, "no session_id"),
        ("phone.sms_received", {"object": {**OBJ, "message_id": 7}}, "no message_id"),
        ("phone.sms_received", {"object": {**OBJ, "attachments": "x"}}, "not a list"),
        ("phone.sms_received", {"object": {**OBJ, "attachments": [{"id": ""}]}}, "has no id"),
    ],
)
def test_events_that_do_not_fit(event: str, payload: dict[str, Any], problem: str) -> None:
    with pytest.raises(EventError, match=problem):
        event_message(event, payload)


async def test_simulator_events_fit_zooms_schema_and_map_back_to_the_api_record() -> None:
    config = SimulatorConfig(seed=3, sessions=8, history_days=30, webhook_url="")
    async with Simulator(config) as sim:
        added = sim.add_messages(150, attachments=None)
        truth = truth_messages(sim)
        exact = 0
        for line in added:
            key = (line["session_id"], line["message_id"])
            event = json.loads(sim.webhook_event(*key))
            jsonschema.Draft7Validator(relaxed_schema(event["event"])).validate(event)
            session_id, record = event_message(event["event"], event["payload"])
            assert session_id == key[0]
            api = truth[key]
            if record["delivery_status"] == api["delivery_status"]:
                exact += 1
                assert strip_jwt(record) == api  # same digest: the sync line is deduped
            else:
                # An outbound message the API shows as delivered (or failed later): the event
                # can only say it was sent; the sync line will supersede it.
                assert event["event"] == "phone.sms_sent"
                assert record["delivery_status"] == "sent"
                assert strip_jwt(record) == {**api, "delivery_status": "sent"}
        assert exact > len(added) // 2  # all inbound messages and the plain sends
        assert any(r.get("attachments") for r in truth.values())
