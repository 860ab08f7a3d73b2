"""The HTML transcript: one self-contained page per session, and an index page.

Pure functions from views to strings; the exporter streams them into files. Pages carry no
script and no outside resource: CSS is inline, images are copies next to the pages, and a
Content-Security-Policy forbids everything else, so a page opened years later, offline, shows
the same thing. Every value from the archive goes through `html_text`/`html_name`, and every
href is built from hashes and sequence numbers only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from archiver.export.filters import epoch_text
from archiver.export.index import PageRow
from archiver.export.text import html_attr, html_name, html_text, shorten
from archiver.export.view import AttachmentView, MessageView, Person

# 'self' does not cover file: URLs in every browser, so images name the scheme as well.
_CSP: Final = (
    "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

CSS: Final = """
:root{color-scheme:light;--in:#f1f3f5;--out:#dbeafe;--line:#d0d7de;--dim:#57606a}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif,
"Noto Color Emoji";margin:0 auto;max-width:960px;padding:16px 24px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta,.foot{color:var(--dim);font-size:13px}code,.id{font:12px ui-monospace,monospace;
overflow-wrap:anywhere}
.msg{border:1px solid var(--line);border-radius:12px;padding:8px 12px;margin:10px 0;
max-width:78%;background:var(--in);overflow-wrap:anywhere}
.msg.out{margin-left:auto;background:var(--out)}
.msg.old{opacity:.75;border-style:dashed}
.msg header{font-size:13px;color:var(--dim);display:flex;flex-wrap:wrap;gap:4px 10px}
.msg header b{color:#1f2328}
.badge{border:1px solid var(--line);border-radius:8px;padding:0 6px;background:#fff}
.text{white-space:pre-wrap;margin:6px 0;font-size:16px}
.att{list-style:none;padding:0;margin:6px 0;font-size:13px}
.att li{margin:4px 0}.att img{display:block;max-width:320px;max-height:320px;
border-radius:6px;border:1px solid var(--line);margin-bottom:2px}
.bad{color:#b42318}
.ctl{font:11px ui-monospace,monospace;border:1px solid #b42318;color:#b42318;
border-radius:3px;padding:0 2px;margin:0 1px;white-space:nowrap}
table{border-collapse:collapse;width:100%;font-size:14px}
td,th{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
@media print{.msg{break-inside:avoid;max-width:100%}}
"""


@dataclass(frozen=True, slots=True)
class Production:
    """What every page says about the export it belongs to."""

    tool: str
    created_at: str
    last_seq: int
    head: str
    filter_text: str


def document_start(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head><body>\n"
    )


def production_line(prod: Production) -> str:
    return (
        f'<p class="foot">Exported {html_name(prod.created_at)} by {html_name(prod.tool)} from '
        f"the archive up to seq {prod.last_seq} (chain head <code>{prod.head}</code>). "
        f"Filter: {html_name(prod.filter_text)}. Times are UTC.</p>\n"
    )


def session_start(
    session_id: str, messages: int, first: int | None, last: int | None, prod: Production
) -> str:
    return (
        document_start(f"Conversation {html_attr(shorten(session_id, 60))}")
        + '<p class="meta"><a href="../index.html">All conversations</a></p>'
        + f'<h1>Conversation <span class="id">{html_name(session_id)}</span></h1>'
        + f'<p class="meta">{messages} message(s), {epoch_text(first)} to {epoch_text(last)}'
        + "</p>\n"
        + production_line(prod)
    )


def session_end(people: Iterable[Person]) -> str:
    items = "".join(f"<li>{_person(p)}</li>" for p in people)
    return f"<h2>Participants</h2><ul>{items}</ul>\n</body></html>\n"


def _person(p: Person) -> str:
    name = f"<b>{html_name(p.name)}</b> " if p.name else ""
    number = f'<span class="id">{html_name(p.number)}</span>' if p.number else ""
    return (name + number) or "(unknown)"


def message(view: MessageView) -> str:
    """One message as a chat bubble: outgoing on the right, incoming on the left."""
    classes = "msg out" if view.direction.lower() == "out" else "msg"
    if not view.latest:
        classes += " old"
    recipients = ", ".join(_person(p) for p in view.recipients) or "(none)"
    parts = [
        f'<article class="{classes}" id="seq-{view.seq}"><header>',
        f"<time>{epoch_text(view.epoch) if view.epoch is not None else html_name(view.date_time)}"
        "</time>",
        f'<span class="badge">{html_name(view.direction) or "?"}</span>',
        f'<span class="badge">{html_name(view.type_label) or "?"}</span>',
        f"<span>status: {html_name(view.delivery_status) or '(none)'}</span>",
        "</header>",
        f'<div class="meta">From {_person(view.sender)} to {recipients}</div>',
        f'<div class="text" dir="auto">{html_text(view.text)}</div>',
    ]
    if view.attachments:
        parts.append('<ul class="att">')
        parts.extend(f"<li>{_attachment(a)}</li>" for a in view.attachments)
        parts.append("</ul>")
    parts.append(f'<div class="foot">{_provenance(view)}</div></article>\n')
    return "".join(parts)


def _attachment(att: AttachmentView) -> str:
    name = f'<span dir="auto">{html_name(att.name)}</span>' if att.name else "(no name)"
    size = f", {html_name(att.size)} bytes" if att.size else ""
    kind = f" ({html_name(att.zoom_type)}{size})"
    if att.status == "archived":
        href = f"../{att.file}"  # hex and a fixed extension only: see files.attachment_file
        image = f'<a href="{href}"><img src="{href}" alt=""></a>' if att.image else ""
        return f'{image}<a href="{href}">{name}</a>{kind} sha256 <code>{att.sha256}</code>'
    if att.status == "pending":
        return f'{name}{kind} <span class="bad">not archived yet</span>'
    reason = f": {html_name(att.reason)}" if att.reason else ""
    return f'{name}{kind} <span class="bad">not archived ({att.status}{reason})</span>'


def _provenance(view: MessageView) -> str:
    text = f"seq {view.seq} · id <code>{html_name(view.message_id)}</code>"
    if view.versions > 1:
        text += f" · version {view.version} of {view.versions}"
    if view.supersedes:
        text += f" · replaces seq {html_name(view.supersedes)}"
    if not view.latest:
        text += " · superseded"
    return text + f" · archived {html_name(view.archived_at)} via {html_name(view.source)}"


def index_start(prod: Production, outputs: Iterable[str]) -> str:
    links = " · ".join(f'<a href="{name}">{name}</a>' for name in outputs)
    return (
        document_start("Zoom SMS export")
        + "<h1>Zoom SMS/MMS export</h1>"
        + production_line(prod)
        + f'<p class="meta">Files: {links}</p>\n'
        + "<table><thead><tr><th>Conversation</th><th>Participants</th><th>Messages</th>"
        + "<th>First</th><th>Last</th></tr></thead><tbody>\n"
    )


def index_row(page: PageRow) -> str:
    # page.file is `sessions/<hex>.html` (files.session_file): safe in an href as it is.
    return (
        f'<tr><td><a class="id" href="{page.file}">{html_name(shorten(page.session_id, 80))}'
        f'</a></td><td dir="auto">{html_name(page.people)}</td><td>{page.messages}</td>'
        f"<td>{epoch_text(page.first)}</td><td>{epoch_text(page.last)}</td></tr>\n"
    )


def index_end(sessions: int) -> str:
    empty = '<tr><td colspan="5">No message matched the filter.</td></tr>' if not sessions else ""
    return f"{empty}</tbody></table>\n</body></html>\n"
