"""The simulated account: sessions, messages, attachments, and their pre-encoded JSON.

A message is encoded once, when the file host's address is known, into *pieces*: the JSON
with a gap after every attachment's `download_url` path. The API fills each gap with
`?jwt=<token>`; the ground truth joins the pieces with nothing, which is the record "with the
jwt removed" (the URL loses its query string, since `jwt` is its only parameter). Pages are
built by joining bytes, never by re-serialising objects.
"""

from __future__ import annotations

import bisect
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class Attachment:
    id: str
    name: str
    type: str
    size: int
    sha256: str = ""


@dataclass(slots=True, eq=False)
class Message:
    message_id: str
    ms: int  # unique and strictly increasing inside a session; the API shows whole seconds
    direction: str
    delivery_status: str
    attachments: tuple[Attachment, ...]
    record: dict[str, Any] | None  # dropped once encoded into `pieces`
    pieces: tuple[bytes, ...] = ()
    # The API form, reused while its URLs' expiries (earliest, latest) are still acceptable.
    cached_exps: tuple[int, int] = (0, 0)
    cached: bytes = b""


@dataclass(slots=True, eq=False)
class Session:
    session_id: str
    session_type: str
    seq: int  # creation order: the session list pages by it, so new sessions go last
    kind: str  # group, direct, international or on_net: decides the message types
    owner: dict[str, Any]
    peers: list[dict[str, Any]]
    messages: list[Message] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    by_id: dict[str, Message] = field(default_factory=dict)
    in_times: list[int] = field(default_factory=list)
    out_times: list[int] = field(default_factory=list)
    pool: list[Attachment] = field(default_factory=list)  # earlier attachments, for reuse
    # The API bytes of each message (parallel to `messages`); entries of messages with
    # attachments (their indices in `with_attachments`) are refreshed as their JWTs age.
    encoded: list[bytes] = field(default_factory=list)
    with_attachments: list[int] = field(default_factory=list)
    participants_json: bytes = b""
    deleted: bool = False

    def append(self, message: Message) -> None:
        if self.times and message.ms <= self.times[-1]:
            raise ValueError("messages must be appended in strictly increasing time")
        self.messages.append(message)
        self.times.append(message.ms)
        self.by_id[message.message_id] = message
        (self.in_times if message.direction == "In" else self.out_times).append(message.ms)

    @property
    def last_ms(self) -> int:
        return self.times[-1] if self.times else 0

    def visible_times(self, until_ms: int | None) -> list[int]:
        """`times` of the messages stamped at or before `until_ms` (None: all of them)."""
        if until_ms is None or not self.times or self.times[-1] <= until_ms:
            return self.times
        return self.times[: bisect.bisect_right(self.times, until_ms)]

    def has_message_between(
        self, kind: str, lo_ms: int, hi_ms: int, until_ms: int | None = None
    ) -> bool:
        """Whether a message of `kind` (Zoom's filter_type) falls in [lo_ms, hi_ms], of
        those stamped at or before `until_ms` (the visible ones)."""
        if kind == "last_message_time":
            visible = self.visible_times(until_ms)
            return bool(visible) and lo_ms <= visible[-1] <= hi_ms
        if until_ms is not None:
            hi_ms = min(hi_ms, until_ms)
        lists = {
            "sent_message_time": (self.out_times,),
            "received_message_time": (self.in_times,),
            "sent_received_message_time": (self.times,),
        }[kind]
        return any(bisect.bisect_left(t, lo_ms) < bisect.bisect_right(t, hi_ms) for t in lists)

    def listing_json(self, until_ms: int | None = None) -> bytes:
        visible = self.visible_times(until_ms)
        return b"".join(
            (
                b'{"session_id":',
                dumps(self.session_id),
                b',"session_type":',
                dumps(self.session_type),
                b',"last_access_time":"',
                iso_seconds(visible[-1] if visible else 0).encode(),
                b'","participants":',
                self.participants_json,
                b"}",
            )
        )


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def iso_seconds(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def encode_message(message: Message, file_url: str) -> None:
    """Fill `message.pieces` from its record (attachments go last, each URL leaves a gap)."""
    assert message.record is not None
    head = dumps(message.record)
    if not message.attachments:
        message.pieces = (head,)
    else:
        pieces = [head[:-1] + b',"attachments":[']
        for index, att in enumerate(message.attachments):
            meta = dumps({"id": att.id, "name": att.name, "size": att.size, "type": att.type})
            url = dumps(f"{file_url}/file/download/{att.id}")
            pieces[-1] += (b"," if index else b"") + meta[:-1] + b',"download_url":' + url[:-1]
            pieces.append(b'"}')
        pieces[-1] += b"]}"
        message.pieces = tuple(pieces)
    message.record = None


def encode_session(session: Session) -> None:
    parts = [{**session.owner, "is_session_owner": True}]
    parts += [{**peer, "is_session_owner": False} for peer in session.peers]
    session.participants_json = dumps(parts)


def truth_record(message: Message) -> bytes:
    return b"".join(message.pieces)
