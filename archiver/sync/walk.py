"""One rule for every walk backwards through a session: first contact, backfill and gap fill.

A walk starts at the newest end (FSync) or from a saved cursor (a BSync token) and asks for
older pages until it has *evidence* that nothing older is missing (DESIGN.md, invariant 8):

- an empty page: the start of history (for a gap fill too: nothing older exists);
- two BSync answers in a row, each not full and holding only messages of the previous
  page's oldest second (`edge`), the second from the token the first one gave (the window
  did not move older): a Zoom whose lower bound is inclusive repeats the covered message on
  every page and never answers an empty one, so two such answers are the evidence we can
  have (whether or not the token string changed: that one at the start repeats its window).
  One alone is not: with a loose `count`, a short page whose only slot went to the
  repeat looks the same while older messages remain. A first edge-only page makes the walk
  PROBABLE_START (its token kept, `repeat`), and the confirming BSync settles it: empty or
  edge-only again, confirmed; anything older, the walk goes on. A full page of repeats
  proves nothing;
- when filling a gap after 7035/300: a page that reaches into what earlier sync windows
  covered (`met`).

Nothing else ends a walk. Zoom documents `count` only as "the number of records returned
within a single API call", so a short page proves nothing: it makes the walk *probably* at the
start, and one more BSync from its token (queued behind all other work) settles it: empty, the
start is confirmed; otherwise the walk goes on. A non-empty page without a `sync_token` leaves
the cursor where it was and the same request is repeated (its messages are archived all the
same); after `NO_TOKEN_LIMIT` such pages in a row the session is reported failed, never done.

`frontier` is the oldest message time the walk has archived. When a cursor is refused (Zoom's
token lifetime is undocumented) the walk restarts from FSync, and the pages above the frontier
are a re-walk of what is held: `is_rewalk` lets the caller leave them out of a turn's page
budget, so a walk whose turns lie further apart than the token lifetime still advances; a
page is such a re-walk page only when the walk moved older (`at`, the previous page's oldest
time, or the same second with other messages), so a Zoom that answers the same page again
cannot make a turn endless. `refused` counts the restarts since the walk last `advanced`
(a page older than its frontier, or a BSync page with messages never archived before): a
Zoom whose tokens expire before the next call can come (calls spaced wider than the token
lifetime) refuses every cursor, and the walk would re-walk its newest pages for ever;
`REFUSAL_LIMIT` such restarts in a row make the caller fail the step, saying why, instead of
a pass that never ends.

A full BSync page holding only the cursor's edge (a Zoom whose lower bound is inclusive and
`count` smaller than the repeats: with `count = 1` the covered message takes the only slot)
has no room for anything older: the same request is made again asking for twice as many
(`page_count`, `widen`), up to Zoom's maximum; the caller fails the step if even that page is
only the edge.

Pure: no I/O, table-tested in tests/sync/test_walk.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Final

from archiver.config import MAX_SYNC_COUNT
from archiver.zoom.models import parse_time

NO_TOKEN_LIMIT: Final = 5
REFUSAL_LIMIT: Final = 5


class Phase(StrEnum):
    WALKING = "walking"  # more pages to fetch from `cursor` (None: from the newest end)
    PROBABLE_START = "probable_start"  # the last page was short: one confirming BSync is due
    CONFIRMED = "confirmed"  # an empty page: nothing older exists
    MET = "met"  # gap fill: a page reached what earlier windows covered
    # NO_TOKEN_LIMIT non-empty pages in a row came without a token
    NO_TOKEN = "no_token"  # noqa: S105 - a phase name, not a credential


ENDED: Final = frozenset({Phase.CONFIRMED, Phase.MET})


@dataclass(frozen=True, slots=True)
class Walk:
    cursor: str | None = None
    phase: Phase = Phase.WALKING
    no_token: int = 0
    frontier: str | None = None  # ISO time of the oldest message this walk archived
    # Where the cursor is: the previous page's oldest time and the ids of its messages of that
    # second (what an inclusive lower bound repeats). Bookkeeping, not the walk's identity.
    at: str | None = field(default=None, compare=False)
    edge: tuple[str, ...] = field(default=(), compare=False)
    # The cursor after a short edge-only page (its token, else the cursor kept): one more
    # such answer to the request from it confirms the start.
    repeat: str | None = None
    refused: int = 0  # cursors refused since the walk last `advanced` (restarts)
    widen: int = 0  # full pages in a row of only the cursor's edge (see `page_count`)
    # False from a restart until a page brought nothing new: the re-walk has reached what
    # the walk held, so news on a BSync page is depth again, not traffic that arrived since.
    rejoined: bool = True

    @property
    def ended(self) -> bool:
        return self.phase in ENDED

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> Walk | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                cursor=data.get("cursor"),
                phase=Phase(data.get("phase", Phase.WALKING)),
                no_token=int(data.get("no_token", 0)),
                frontier=data.get("frontier"),
                at=data.get("at"),
                edge=tuple(str(i) for i in data.get("edge") or ()),
                repeat=data.get("repeat"),
                refused=int(data.get("refused", 0)),
                widen=int(data.get("widen", 0)),
                rejoined=bool(data.get("rejoined", True)),
            )
        except (ValueError, TypeError, AttributeError):
            return None  # a cache entry we cannot read: walk again from the newest end


@dataclass(frozen=True, slots=True)
class PageFacts:
    """What the walk needs to know of a page it just made durable."""

    size: int  # messages on the page, repeats included
    token: str | None
    oldest: datetime | None  # oldest date_time on the page
    met: bool = False  # gap fill: the page reached the covered region
    ids: tuple[str, ...] = ()  # message ids on the page
    edge: tuple[str, ...] = ()  # the ids of its messages of the oldest second
    new: int = 0  # messages of it never archived before
    changed: int = 0  # messages of it archived before with other content


def after_page(walk: Walk, page: PageFacts, count: int) -> Walk:
    """The walk after `page` (already archived) came back for a request from `walk.cursor`."""
    frontier = _older(walk.frontier, page.oldest)
    # Further than the walk had been (`advanced`): the restarts before are behind us.
    refused = 0 if advanced(walk, page) else walk.refused
    rejoined = walk.rejoined or (page.size > 0 and page.new == 0)
    if page.size == 0:
        # Nothing older than the cursor: the start of history, token or not.
        return replace(
            walk,
            phase=Phase.CONFIRMED,
            no_token=0,
            frontier=frontier,
            repeat=None,
            refused=0,
            rejoined=True,
        )
    if page.size < count and only_edge(walk, page):
        return replace(_after_edge_only(walk, page, frontier), rejoined=rejoined)
    at = page.oldest.isoformat() if page.oldest is not None else walk.at
    if page.met:
        return Walk(page.token or walk.cursor, Phase.MET, 0, frontier, at, page.edge)
    if only_edge(walk, page):
        # Full, and nothing older: the repeats of what the cursor covers took every slot.
        # The same request again, for twice as many (`page_count`); nothing is concluded.
        streak = 0 if page.token else walk.no_token + 1
        phase = Phase.NO_TOKEN if streak >= NO_TOKEN_LIMIT else Phase.WALKING
        return replace(
            walk,
            cursor=page.token or walk.cursor,
            phase=phase,
            no_token=streak,
            frontier=frontier,
            repeat=None,
            widen=walk.widen + 1,
            rejoined=rejoined,
        )
    if not page.token:
        # Keep the cursor (and where it is): the same request is made again (its messages
        # are safe already).
        streak = walk.no_token + 1
        phase = Phase.NO_TOKEN if streak >= NO_TOKEN_LIMIT else walk.phase
        # The same request: the same count too (`widen` kept).
        return Walk(
            walk.cursor,
            phase,
            streak,
            frontier,
            walk.at,
            walk.edge,
            refused=refused,
            widen=walk.widen,
            rejoined=rejoined,
        )
    phase = Phase.PROBABLE_START if page.size < count else Phase.WALKING
    return Walk(page.token, phase, 0, frontier, at, page.edge, refused=refused, rejoined=rejoined)


def _after_edge_only(walk: Walk, page: PageFacts, frontier: str | None) -> Walk:
    """A short page of the cursor's own edge: nothing older came back although there was
    room. The second such answer in a row, from the new token the first gave, confirms the
    start; the first one only makes it probable. It moves nothing: edge and `at` are kept."""
    if walk.repeat is not None and walk.cursor == walk.repeat:
        return replace(walk, phase=Phase.CONFIRMED, no_token=0, frontier=frontier)
    cursor = page.token or walk.cursor
    # Without a token the same request is made again (as for any page without one).
    streak = 0 if page.token else walk.no_token + 1
    phase = Phase.NO_TOKEN if streak >= NO_TOKEN_LIMIT else Phase.PROBABLE_START
    return replace(
        walk, cursor=cursor, phase=phase, no_token=streak, frontier=frontier, repeat=cursor
    )


def advanced(walk: Walk, page: PageFacts) -> bool:
    """Whether `page` took the walk further than it had been: older than its frontier, or a
    BSync page with messages never archived before. BSync answers only what is older than
    its window, so news there is depth reached whatever the times say (a run of one second
    longer than a page, a backdated or timeless message); news on an FSync page is only the
    session's newest end moving on, and so is news on the BSync pages after a restart until
    the re-walk has `rejoined` what the walk held (messages that arrived since)."""
    if walk.cursor is not None and page.new > 0 and walk.rejoined:
        return True
    reached = parse_time(walk.frontier)
    return page.oldest is not None and (reached is None or page.oldest < reached)


def page_count(walk: Walk, count: int) -> int:
    """The `count` to ask for from `walk.cursor`: the configured one, doubled for each full
    page in a row that held only the cursor's edge, at most Zoom's maximum."""
    return min(MAX_SYNC_COUNT, count << min(walk.widen, 8))


def only_edge(walk: Walk, page: PageFacts) -> bool:
    """A BSync page (the walk has a cursor) whose every message was on the previous page, in
    its oldest second: nothing older than the cursor came back."""
    return (
        walk.cursor is not None
        and bool(walk.edge)
        and bool(page.ids)
        and set(page.ids) <= set(walk.edge)
    )


def restarted(walk: Walk) -> Walk:
    """The walk after its cursor was refused: from the newest end again, frontier kept, one
    more restart counted (`refused` >= `REFUSAL_LIMIT`: the caller fails the step)."""
    return Walk(None, Phase.WALKING, 0, walk.frontier, refused=walk.refused + 1, rejoined=False)


def is_rewalk(walk: Walk, page: PageFacts, new_messages: int) -> bool:
    """A page that only re-covers what this walk already archived above its frontier (after a
    restart) and moved the walk older than the page before it: it adds nothing, so it costs
    no turn budget. A page that did not move (the same answer again) costs budget."""
    frontier = parse_time(walk.frontier)
    at = parse_time(walk.at)
    # Moved: older than the page before, or to other messages of its oldest second (a run of
    # one second longer than a page); the same answer again has the same oldest second.
    moved = (
        walk.cursor is None
        or at is None
        or (page.oldest is not None and page.oldest < at)
        or (page.oldest == at and not set(page.edge) <= set(walk.edge))
    )
    return (
        new_messages == 0
        and frontier is not None
        and page.oldest is not None
        and page.oldest >= frontier
        and moved
    )


def _older(frontier: str | None, oldest: datetime | None) -> str | None:
    current = parse_time(frontier)
    if oldest is None:
        return frontier
    if current is None or oldest < current:
        return oldest.isoformat()
    return frontier
