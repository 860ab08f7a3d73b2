"""The CSV output: one row per message line, stable documented columns (docs/EXPORT.md).

RFC 4180: comma separated, fields quoted when they hold a comma, quote or line break, CRLF
between records, UTF-8 (with a BOM on request, which Excel needs to detect UTF-8). Lists (the
recipients, the attachments) sit in one cell, one item per line, in the same order in every
list column, so `attachment_names` line 2 and `attachment_sha256` line 2 are one attachment.
Items never contain a line break themselves: `visible_name` turns it into `[U+000A]`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Final, Protocol

from archiver.export.text import csv_cell, visible, visible_name
from archiver.export.view import MessageView

COLUMNS: Final = (
    "seq",
    "session_id",
    "message_id",
    "date_time",
    "direction",
    "message_type",
    "delivery_status",
    "sender_number",
    "sender_name",
    "recipient_numbers",
    "recipient_names",
    "text",
    "attachment_count",
    "attachment_names",
    "attachment_types",
    "attachment_sha256",
    "attachment_status",
    "version",
    "versions",
    "latest",
    "supersedes",
    "archived_at",
    "source",
    "digest",
)
BOM: Final = "\ufeff"


class TextSink(Protocol):
    def write(self, text: str, /) -> int: ...


def _lines(items: Iterable[str]) -> str:
    return "\n".join(visible_name(item) for item in items)


def row(view: MessageView) -> list[str]:
    """The cells of one message, each already made safe for spreadsheet tools."""
    atts = view.attachments
    cells = [
        str(view.seq),
        visible_name(view.session_id),
        visible_name(view.message_id),
        visible_name(view.date_time),
        visible_name(view.direction),
        visible_name(view.message_type),
        visible_name(view.delivery_status),
        visible_name(view.sender.number),
        visible_name(view.sender.name),
        _lines(p.number for p in view.recipients),
        _lines(p.name for p in view.recipients),
        visible(view.text),
        str(len(atts)),
        _lines(a.name for a in atts),
        _lines(a.zoom_type for a in atts),
        _lines(a.sha256 for a in atts),
        _lines(a.status + (f": {a.reason}" if a.reason else "") for a in atts),
        str(view.version),
        str(view.versions),
        "true" if view.latest else "false",
        visible_name(view.supersedes),
        visible_name(view.archived_at),
        visible_name(view.source),
        visible_name(view.digest),
    ]
    return [csv_cell(cell) for cell in cells]


class CsvOut:
    """Streams rows into a text sink (an OutputFile, which hashes what it writes)."""

    def __init__(self, sink: TextSink, *, bom: bool) -> None:
        if bom:
            sink.write(BOM)
        # lineterminator "\r\n" and QUOTE_MINIMAL are RFC 4180; set explicitly, not by default.
        self._writer = csv.writer(sink, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        self._writer.writerow(COLUMNS)

    def add(self, view: MessageView) -> None:
        self._writer.writerow(row(view))
