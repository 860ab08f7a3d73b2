"""The sync model of zoom/README.md as pure functions over a session's message times.

A token is base64 of `<session_id>_<older_ms>_<newer_ms>`: the window the caller has seen.
Message times are unique and strictly increasing inside a session, so a window is exact.

- FSync: the newest `count` messages, newest first; the window covers them.
- BSync: up to `count` messages older than the window, newest first; the window grows
  backwards. At the start of history: an empty page and the same window.
- ISync: the messages newer than the window, newest first, or `TooManyNew` (code 7035) when
  more than `count` arrived.

Quirks bend pages without breaking the contract that a window covers exactly what was sent:
- overlap: a BSync/ISync page that has news also repeats the previous window's boundary
  message (it takes one slot of `count`, so a page never exceeds `count`);
- duplicate: one message of the page appears twice (also inside `count`);
- ascending: oldest first.
A slot is given to a quirk only when at least one new message still fits, so paging always
progresses. With the slots taken, ISync may deliver the oldest of the new messages first
and the rest on the next call (with `count` new messages and overlap, a full ISync page
holds the known boundary and leaves the newest message for the next ISync).

A short page (`short`; the caller draws it for ISync only when `short_isync_probability`
is on) holds at most `short` < `count` entries while more messages remain: Zoom documents
`count` only as "the number of records returned within a single API call". Its window covers
exactly what it returned, so the next call goes on from there; the start of history is an
empty BSync page, or with `inclusive` a page of the window's oldest message alone.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

SYNC_TYPES: Final = ("FSync", "ISync", "BSync")


class TooManyNew(Exception):
    """ISync found more than `count` new messages (Zoom code 7035)."""


@dataclass(frozen=True)
class Window:
    older: int
    newer: int


@dataclass(frozen=True)
class Quirks:
    overlap: bool = False
    ascending: bool = False
    duplicate: bool = False
    # BSync's lower bound is inclusive: every BSync page repeats the previous window's oldest
    # message, at the start of history too (then it is the page's only entry, never empty).
    inclusive: bool = False


def encode_token(session_id: str, window: Window) -> str:
    raw = f"{session_id}_{window.older}_{window.newer}".encode()
    return base64.b64encode(raw).decode()


def decode_token(token: str, session_id: str) -> Window | None:
    """The window of a token for this session, or None if it is not one."""
    try:
        raw = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
        owner, older, newer = raw.rsplit("_", 2)
        window = Window(int(older), int(newer))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if owner != session_id or not 0 <= window.older <= window.newer:
        return None
    if not (older.isdigit() and newer.isdigit()):
        return None
    return window


def sync_page(
    times: Sequence[int],
    sync_type: str,
    count: int,
    window: Window | None,
    quirks: Quirks = Quirks(),
    *,
    short: int | None = None,
) -> tuple[list[int], Window]:
    """Indices into `times` in response order, and the window the returned token covers.

    `short` (1..count-1) caps a FSync/BSync page when more candidates remain than it holds;
    otherwise it changes nothing (a page that already reaches the start stays as it is).
    """
    news, boundary = _candidates(times, sync_type, count, window)
    room = count
    if short is not None and 1 <= short < min(count, len(news)):
        room = short
    inclusive = quirks.inclusive and sync_type == "BSync" and (not news or room >= 2)
    if not (quirks.overlap and news and room >= 2) and not inclusive:
        boundary = None
    if boundary is not None:
        room -= 1
    duplicate = quirks.duplicate and bool(news) and room >= 2
    if duplicate:
        room -= 1
    # BSync and FSync take the newest of their candidates, ISync the oldest, so the window
    # stays one contiguous range whatever was left out.
    taken = news[:room] if sync_type == "ISync" else news[max(0, len(news) - room) :]
    page = list(taken)
    if boundary is not None:
        page = [*page, boundary] if sync_type == "BSync" else [boundary, *page]
    window = _grown(times, sync_type, window, taken)
    if not quirks.ascending:
        page.reverse()
    if duplicate:
        middle = len(page) // 2
        page.insert(middle + 1, page[middle])
    return page, window


def _candidates(
    times: Sequence[int], sync_type: str, count: int, window: Window | None
) -> tuple[range, int | None]:
    """The messages the page may hold (oldest first) and the previous window's boundary."""
    total = len(times)
    if sync_type == "FSync":
        return range(max(0, total - count), total), None
    assert window is not None, "BSync and ISync need a window"
    if sync_type == "BSync":
        cut = bisect.bisect_left(times, window.older)
        boundary = cut if cut < total and times[cut] == window.older else None
        return range(cut), boundary
    cut = bisect.bisect_right(times, window.newer)
    if total - cut > count:
        raise TooManyNew
    boundary = cut - 1 if cut > 0 and times[cut - 1] == window.newer else None
    return range(cut, total), boundary


def _grown(times: Sequence[int], sync_type: str, window: Window | None, taken: range) -> Window:
    if not taken:
        return window or Window(0, 0)  # FSync of an empty session: nothing seen yet
    first, last = times[taken[0]], times[taken[-1]]
    if sync_type == "FSync" or window is None:
        return Window(first, last)
    if sync_type == "BSync":
        return Window(first, window.newer)
    return Window(window.older, last)
