"""Typed views of Zoom responses, parsed strictly where we depend on a field, leniently elsewhere.

A message record is kept as the dict Zoom sent (the archive stores it as received); parsing
only checks what the archiver relies on: a non-empty string `message_id`, and when present,
`attachments` as a list of objects with a string `id`. Anything else that does not fit raises
`ZoomResponseError` naming the endpoint and session — a page is never half-accepted, so no
message is silently skipped.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from archiver.errors import ZoomResponseError

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    session_type: str | None
    last_access_time: datetime | None


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionInfo]
    next_page_token: str | None


@dataclass(frozen=True, slots=True)
class SyncPage:
    messages: list[JsonObject]
    sync_token: str | None


@dataclass(frozen=True, slots=True)
class Attachment:
    attachment_id: str
    name: str
    type: str
    size: int | None
    download_url: str | None


def _fail(problem: str, endpoint: str, session_id: str | None) -> ZoomResponseError:
    return ZoomResponseError(
        f"unexpected response: {problem}", endpoint=endpoint, session_id=session_id
    )


def _object(body: Any, endpoint: str, session_id: str | None) -> JsonObject:
    if not isinstance(body, dict):
        raise _fail(f"expected a JSON object, got {type(body).__name__}", endpoint, session_id)
    return body


def _optional_str(obj: JsonObject, key: str, endpoint: str, session_id: str | None) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(f"{key} is {type(value).__name__}, not a string", endpoint, session_id)
    return value


def parse_time(value: Any) -> datetime | None:
    """Zoom's UTC timestamps: '2022-03-25T02:11:27Z' (also tolerates offsets and fractions)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_session_page(body: Any, endpoint: str) -> SessionPage:
    obj = _object(body, endpoint, None)
    raw = obj.get("sms_sessions")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise _fail("sms_sessions is not a list", endpoint, None)
    sessions = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _fail(f"sms_sessions[{index}] is not an object", endpoint, None)
        session_id = item.get("session_id")
        problem = id_problem(session_id)
        if problem is not None:
            raise _fail(f"sms_sessions[{index}] {problem.format('session_id')}", endpoint, None)
        assert isinstance(session_id, str)  # id_problem checked it; this tells mypy
        session_type = item.get("session_type")
        sessions.append(
            SessionInfo(
                session_id=session_id,
                session_type=session_type if isinstance(session_type, str) else None,
                last_access_time=parse_time(item.get("last_access_time")),
            )
        )
    return SessionPage(sessions, _optional_str(obj, "next_page_token", endpoint, None))


def id_problem(value: Any) -> str | None:
    """Why `value` is no usable id, or None. JSON can carry a lone surrogate (`"\ud800"`)
    that UTF-8, and so SQLite and every later lookup by the id, cannot."""
    if not isinstance(value, str) or not value:
        return "has no {}"
    if value.isascii():  # the common case, and no surrogate is ASCII
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "has a {} that is not valid Unicode (a lone surrogate)"
    return None


def check_message(record: Any, endpoint: str, session_id: str | None, where: str) -> JsonObject:
    """Validate one message object (sync page, single message, or webhook payload)."""
    if not isinstance(record, dict):
        raise _fail(f"{where} is not an object", endpoint, session_id)
    problem = id_problem(record.get("message_id"))
    if problem is not None:
        raise _fail(f"{where} {problem.format('message_id')}", endpoint, session_id)
    attachments = record.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list):
            raise _fail(f"{where}.attachments is not a list", endpoint, session_id)
        for index, att in enumerate(attachments):
            problem = id_problem(att.get("id")) if isinstance(att, dict) else "has no {}"
            if problem is not None:
                raise _fail(
                    f"{where}.attachments[{index}] {problem.format('id')}", endpoint, session_id
                )
    return record


def parse_sync_page(body: Any, endpoint: str, session_id: str) -> SyncPage:
    obj = _object(body, endpoint, session_id)
    raw = obj.get("sms_histories")
    if raw is None:
        raw = []  # Zoom may omit the list on an empty page
    if not isinstance(raw, list):
        raise _fail("sms_histories is not a list", endpoint, session_id)
    messages = [
        check_message(item, endpoint, session_id, f"sms_histories[{i}]")
        for i, item in enumerate(raw)
    ]
    return SyncPage(messages, _optional_str(obj, "sync_token", endpoint, session_id))


def parse_message(body: Any, endpoint: str, session_id: str) -> JsonObject:
    return check_message(_object(body, endpoint, session_id), endpoint, session_id, "message")


def attachments_of(record: JsonObject) -> list[Attachment]:
    """The attachments of a validated message, de-duplicated by id (Zoom repeats ids)."""
    seen: set[str] = set()
    out: list[Attachment] = []
    for att in record.get("attachments") or []:
        attachment_id = att["id"]
        if attachment_id in seen:
            continue
        seen.add(attachment_id)
        size = att.get("size")
        url = att.get("download_url")
        name = att.get("name")
        kind = att.get("type")
        out.append(
            Attachment(
                attachment_id=attachment_id,
                name=name if isinstance(name, str) else "",
                type=kind if isinstance(kind, str) else "",
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                download_url=url if isinstance(url, str) and url else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class TokenWindow:
    """What a sync token covers, when it decodes as `<id>_<older_ms>_<newer_ms>`.

    Zoom does not document the token; we only ever use this for display and diagnostics,
    never for control flow, so an opaque token works just as well.
    """

    older_ms: int
    newer_ms: int


def decode_sync_token(token: str) -> TokenWindow | None:
    try:
        text = base64.b64decode(token + "=" * (-len(token) % 4), validate=False).decode("ascii")
        _, older, newer = text.rsplit("_", 2)
        return TokenWindow(int(older), int(newer))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
