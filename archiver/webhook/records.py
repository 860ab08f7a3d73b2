"""From a Zoom SMS event to the message record the archive keeps: a pure mapping.

The manifest dedupes by the digest of a message's record, so the webhook and the sync of the
same message write one line only if both give the very same record. Zoom's two shapes differ
(phone-sms-webhooks-openapi.json against the sync endpoint in phone-sms-openapi.json):

- `message_id`, `message`, `message_type`: the same in both; `date_time` too, kept at the
  sync API's second resolution.
- `direction` (sync: `In`/`Out`): absent from events; the event name says it (received: In;
  sent and sent_failed: Out).
- `delivery_status`: absent from events; what the event itself asserts: `received`, `sent`,
  or `failed_to_send` (phone.sms_sent_failed, or any event with a non-empty
  `failure_reason`). Zoom's spec
  lists it for the message and session endpoints but not for sync; our model (zoom/README.md,
  the simulator) has it in sync too. Should real sync pages lack it, drop it from
  `MESSAGE_EVENTS` here, or every webhook line gets superseded by its sync line.
- `sender`, `to_members[]`: the event has `phone_number`, `display_name`, `id`, `type` (and
  `is_message_owner`); the sync API nests the same `id`/`type` as `owner: {id, type}`.
- `attachments[]`: the event spells `type` in lower case (`jpg`), the sync API uses its enum
  (OTHER, PNG, GIF, JPG, AUDIO, VIDEO); an empty list is left out as the sync API leaves it.
- Only in events, not kept: `session_id` (the manifest line carries it), the session `owner`
  (the sync API shows it as a member's `owner`), `failure_reason` and the campaign opt-in
  statuses (not part of the message the API returns).

So a webhook line's `record` is the event's message in the sync API's shape (`source:
"webhook"` says where it came from), and the ISync that confirms it finds the same digest: no
second line. Where the event cannot know what the API will say (an outbound message delivered
since it was sent: `sent` then `delivered`), the sync line supersedes the webhook line, as for
any message that changed; it is never a duplicate, and the receiver never writes a webhook
version over a message the archive already holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any, Final

from archiver.zoom.models import JsonObject, check_message, parse_time

RECEIVED: Final = "phone.sms_received"
SENT: Final = "phone.sms_sent"
SENT_FAILED: Final = "phone.sms_sent_failed"
# event -> (direction, delivery_status) the sync API shows for such a message.
MESSAGE_EVENTS: Final = {
    RECEIVED: ("In", "received"),
    SENT: ("Out", "sent"),
    SENT_FAILED: ("Out", "failed_to_send"),
}
ENDPOINT: Final = "webhook"
# Zoom's webhook example spells attachment types in lower case ("jpg"); the sync API uses the
# enum OTHER, PNG, GIF, JPG, AUDIO, VIDEO (and its example says "JPG/JPEG").
_ATTACHMENT_TYPES: Final = {
    "jpg": "JPG",
    "jpeg": "JPG",
    "png": "PNG",
    "gif": "GIF",
    "audio": "AUDIO",
    "video": "VIDEO",
    "other": "OTHER",
}
_MEMBER_KEYS: Final = ("phone_number", "display_name")
_ATTACHMENT_KEYS: Final = ("id", "name", "size", "download_url")
_PLAIN_KEYS: Final = ("message_id", "message", "message_type")


class EventError(ValueError):
    """A correctly signed event that does not carry what the archiver needs (answered 400)."""


def event_message(event: str, payload: Any) -> tuple[str, JsonObject]:
    """(session_id, record) of a message event's `payload`; EventError if it does not fit."""
    if event not in MESSAGE_EVENTS:
        raise EventError(f"{event!r} is not a message event")
    obj = payload.get("object") if isinstance(payload, Mapping) else None
    if not isinstance(obj, Mapping):
        raise EventError("payload.object is not an object")
    session_id = obj.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise EventError("payload.object has no session_id")
    record = sync_shaped(event, obj)
    try:
        check_message(record, ENDPOINT, session_id, "payload.object")
    except ValueError as exc:  # ZoomResponseError is a ValueError
        raise EventError(str(exc)) from None
    return session_id, record


def sync_shaped(event: str, obj: Mapping[str, Any]) -> JsonObject:
    """The webhook message object `obj` of `event` in the sync API's message shape."""
    direction, status = MESSAGE_EVENTS[event]
    if obj.get("failure_reason"):
        # Zoom: "An empty field means the SMS send was successful" (its own phone.sms_sent
        # example carries a reason, so a failed send may come under either event name).
        status = "failed_to_send"
    record: JsonObject = {key: obj[key] for key in _PLAIN_KEYS if key in obj}
    if "date_time" in obj:
        record["date_time"] = _seconds(obj["date_time"])
    record["direction"] = direction
    record["delivery_status"] = status
    if "sender" in obj:
        record["sender"] = _member(obj["sender"])
    if "to_members" in obj:
        members = obj["to_members"]
        record["to_members"] = (
            [_member(m) for m in members] if isinstance(members, list) else members
        )
    attachments = obj.get("attachments")
    if isinstance(attachments, list):
        if attachments:
            record["attachments"] = [_attachment(a) for a in attachments]
    elif attachments is not None:
        record["attachments"] = attachments  # check_message refuses it, naming the field
    return record


def _seconds(value: Any) -> Any:
    """Zoom's sync API gives whole seconds; an event with a fraction means the same instant."""
    parsed = parse_time(value)
    if parsed is None:
        return value
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _member(member: Any) -> Any:
    if not isinstance(member, Mapping):
        return member
    out: JsonObject = {key: member[key] for key in _MEMBER_KEYS if key in member}
    owner = {key: member[key] for key in ("id", "type") if key in member}
    if owner:
        out["owner"] = owner
    return out


def _attachment(attachment: Any) -> Any:
    if not isinstance(attachment, Mapping):
        return attachment
    out: JsonObject = {key: attachment[key] for key in _ATTACHMENT_KEYS if key in attachment}
    kind = attachment.get("type")
    if kind is not None:
        # Unknown spellings stay as received rather than being guessed at.
        out["type"] = _ATTACHMENT_TYPES.get(kind.lower(), kind) if isinstance(kind, str) else kind
    return out
