"""From a Zoom SMS event to the message record the archive keeps: the event's object, as sent.

The archive format (DESIGN.md, "Archive format") says a message line's `record` is the object
as Zoom sent it: the sync API's record, or a webhook event's `payload.object`, with the jwt
removed from every `download_url` and nothing else changed. So a webhook line's record is
`payload.object` exactly as received, and `source: "webhook"` says which of Zoom's two shapes
it is. The jwt is removed where every record's is, in the manifest writer
(`store.manifest.strip_jwt`); the record handed on here still carries its URLs whole, because
the download queue fetches the attachments with them.

Zoom's two shapes differ (phone-sms-webhooks-openapi.json against the sync endpoint in
phone-sms-openapi.json; zoom/README.md): the event has `session_id`, a top-level `owner` (with
`sms_sender_user_id` or `team_id`), `failure_reason` on failed sends, the campaign opt-in
statuses, members with `id`/`type` (and `is_message_owner`) where the API nests `owner{id,
type}`, attachment types in lower case (`jpg`), and no `direction` or `delivery_status`. None
of that is translated, guessed or dropped: a mapping would be our reading of Zoom, not Zoom's
words, and an auditor must find in the manifest what Zoom said.

So the sync API's record of the same message never has the webhook line's digest: when the
confirming ISync (or any later sync) returns the message, the writer adds it as a new version
of the same message, a line with `supersedes` pointing at the webhook line (keyed by session
and message id), never a second message. Export and the ledger count it once. The receiver
writes a webhook version only while the archive holds no version of the message at all
(`gate.SessionGate.append_if_new`): the API's record, once there, is never superseded by an
event, however late its retry comes.

Attachments need no mapping either: the event lists them with the keys the API uses (`id`,
`name`, `size`, `type`, `download_url`), so the download ledger (`store.index`) and the queue
(`zoom.models.attachments_of`) read them as they are. Jobs are keyed by (session, message,
attachment id), so the sync version listing the same attachment adds no job and no second
`attachment` line.

What is refused (400 `bad_event`, `EventError`), and nothing else: an event that is not one of
`MESSAGE_EVENTS`; a `payload.object` that is not an object, or without a non-empty string
`session_id`; what `zoom.models.check_message` refuses in any record (no usable `message_id`,
`attachments` not a list, an attachment without a usable `id`); and an object the manifest
cannot hold as canonical JSON (NaN or Infinity, which are not JSON but Python's parser takes,
or nesting too deep to encode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from archiver.store.manifest import canonical
from archiver.zoom.models import JsonObject, check_message

RECEIVED: Final = "phone.sms_received"
SENT: Final = "phone.sms_sent"
SENT_FAILED: Final = "phone.sms_sent_failed"
# The events whose payload.object is one message (etiquette and campaign events are not).
MESSAGE_EVENTS: Final = frozenset({RECEIVED, SENT, SENT_FAILED})
ENDPOINT: Final = "webhook"


class EventError(ValueError):
    """A correctly signed event that does not carry what the archiver needs (answered 400)."""


def event_message(event: str, payload: Any) -> tuple[str, JsonObject]:
    """(session_id, record) of a message event's `payload`; EventError if it does not fit.

    `record` is `payload.object` itself, unchanged (jwt included: the writer strips it).
    """
    if event not in MESSAGE_EVENTS:
        raise EventError(f"{event!r} is not a message event")
    obj = payload.get("object") if isinstance(payload, Mapping) else None
    if not isinstance(obj, dict):
        raise EventError("payload.object is not an object")
    session_id = obj.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise EventError("payload.object has no session_id")
    try:
        check_message(obj, ENDPOINT, session_id, "payload.object")
        # Checked here, not left to the writer: a record it cannot encode would be refused
        # there as a ValueError the receiver would answer with a 500, and Zoom would retry it.
        canonical(obj)
    except (ValueError, RecursionError) as exc:  # ZoomResponseError is a ValueError
        raise EventError(str(exc)) from None
    return session_id, obj
