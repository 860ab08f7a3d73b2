"""One message as the HTML and CSV outputs show it, read defensively from its manifest line.

Pure: the line object and the attachment states in, a typed view out. Every field of a Zoom
record may be missing or of the wrong type; the view then holds "" rather than raising, so one
odd record never stops a production. Text here is still raw: escaping belongs to each output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from archiver.export.files import IMAGE_EXT, attachment_file
from archiver.export.filters import as_dict, as_list, as_text
from archiver.export.index import AttachmentState, Selected

MESSAGE_TYPES: Final = {
    "1": "SMS",
    "2": "MMS",
    "3": "Group SMS",
    "4": "Group MMS",
    "5": "SMS (international)",
    "6": "On-net message",
}
_STATUS: Final = {"attachment": "archived", "attachment_failed": "failed"}


@dataclass(frozen=True, slots=True)
class Person:
    number: str
    name: str

    def label(self) -> str:
        return (
            f"{self.name} ({self.number})"
            if self.name and self.number
            else self.name or self.number
        )


@dataclass(frozen=True, slots=True)
class AttachmentView:
    attachment_id: str
    name: str
    zoom_type: str
    size: str
    status: str  # "archived", "failed", "invalid", "pending"
    sha256: str  # "" unless archived
    reason: str
    file: str  # export-relative path of the copy, "" unless archived

    @property
    def image(self) -> bool:
        return self.file.rsplit(".", 1)[-1] in IMAGE_EXT


@dataclass(frozen=True, slots=True)
class MessageView:
    seq: int
    session_id: str
    message_id: str
    epoch: int | None
    date_time: str  # as Zoom sent it
    direction: str
    message_type: str
    delivery_status: str
    sender: Person
    recipients: tuple[Person, ...]
    text: str
    attachments: tuple[AttachmentView, ...]
    version: int
    versions: int
    latest: bool
    supersedes: str
    archived_at: str
    source: str
    digest: str

    @property
    def type_label(self) -> str:
        return MESSAGE_TYPES.get(self.message_type, self.message_type)


def person(value: object) -> Person:
    data = as_dict(value)
    return Person(as_text(data.get("phone_number")), as_text(data.get("display_name")))


def attachment_view(value: object, states: Mapping[str, AttachmentState]) -> AttachmentView:
    data = as_dict(value)
    attachment_id = as_text(data.get("id"))
    name, zoom_type = as_text(data.get("name")), as_text(data.get("type"))
    state = states.get(attachment_id)
    status, size, sha256, reason, file = "pending", as_text(data.get("size")), "", "", ""
    if state is not None:
        status, reason = _STATUS.get(state.kind, "invalid"), state.reason
        if status == "archived" and state.sha256 is not None:
            # The archived line's size is that of the bytes whose hash is shown beside it.
            sha256, size = state.sha256, state.size or size
            file = attachment_file(sha256, zoom_type, name)
    return AttachmentView(attachment_id, name, zoom_type, size, status, sha256, reason, file)


def message_view(
    selected: Selected, obj: Mapping[str, Any], states: Mapping[str, AttachmentState]
) -> MessageView:
    record = as_dict(obj.get("record"))
    return MessageView(
        seq=selected.seq,
        session_id=selected.session_id,
        message_id=as_text(obj.get("message_id")),
        epoch=selected.epoch,
        date_time=as_text(record.get("date_time")),
        direction=as_text(record.get("direction")),
        message_type=as_text(record.get("message_type")),
        delivery_status=as_text(record.get("delivery_status")),
        sender=person(record.get("sender")),
        recipients=tuple(person(m) for m in as_list(record.get("to_members"))),
        text=as_text(record.get("message")),
        attachments=tuple(attachment_view(a, states) for a in as_list(record.get("attachments"))),
        version=selected.version,
        versions=selected.versions,
        latest=selected.latest,
        supersedes=as_text(obj.get("supersedes")),
        archived_at=as_text(obj.get("at")),
        source=as_text(obj.get("source")),
        digest=as_text(obj.get("digest")),
    )
