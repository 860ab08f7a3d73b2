"""The walk rule (`archiver/sync/walk.py`), one row per case: what a page proves and what not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from archiver.sync.walk import (
    NO_TOKEN_LIMIT,
    PageFacts,
    Phase,
    Walk,
    advanced,
    after_page,
    is_rewalk,
    page_count,
    restarted,
)

T0 = datetime(2023, 12, 1, tzinfo=UTC)
T1 = datetime(2024, 1, 1, tzinfo=UTC)
T2 = datetime(2024, 2, 1, tzinfo=UTC)
COUNT = 10


@pytest.mark.parametrize(
    ("walk", "page", "expected"),
    [
        # an empty page is the only evidence of the start, token or not
        (Walk("c"), PageFacts(0, "n", None), Walk("c", Phase.CONFIRMED)),
        (Walk("c"), PageFacts(0, None, None), Walk("c", Phase.CONFIRMED)),
        (Walk("c", Phase.PROBABLE_START), PageFacts(0, "n", None), Walk("c", Phase.CONFIRMED)),
        # a full page moves the cursor
        (Walk("c"), PageFacts(COUNT, "n", T1), Walk("n", Phase.WALKING, 0, T1.isoformat())),
        # a short page proves nothing: probably the start, one confirming call due
        (Walk("c"), PageFacts(3, "n", T1), Walk("n", Phase.PROBABLE_START, 0, T1.isoformat())),
        (Walk("c"), PageFacts(1, "n", T1), Walk("n", Phase.PROBABLE_START, 0, T1.isoformat())),
        # the confirming call came back with messages: the walk goes on
        (
            Walk("c", Phase.PROBABLE_START),
            PageFacts(COUNT, "n", T1),
            Walk("n", Phase.WALKING, 0, T1.isoformat()),
        ),
        # a non-empty page without a token: the cursor stays, the streak grows
        (Walk("c"), PageFacts(COUNT, None, T1), Walk("c", Phase.WALKING, 1, T1.isoformat())),
        (Walk("c"), PageFacts(2, None, T1), Walk("c", Phase.WALKING, 1, T1.isoformat())),
        (
            Walk("c", Phase.WALKING, NO_TOKEN_LIMIT - 1),
            PageFacts(2, None, T1),
            Walk("c", Phase.NO_TOKEN, NO_TOKEN_LIMIT, T1.isoformat()),
        ),
        # ... and a page with a token ends the streak
        (
            Walk("c", Phase.NO_TOKEN, NO_TOKEN_LIMIT),
            PageFacts(COUNT, "n", T1),
            Walk("n", Phase.WALKING, 0, T1.isoformat()),
        ),
        # gap fill: a page reaching the covered region ends the walk, short or not
        (Walk("c"), PageFacts(COUNT, "n", T1, met=True), Walk("n", Phase.MET, 0, T1.isoformat())),
        (Walk("c"), PageFacts(2, None, T1, met=True), Walk("c", Phase.MET, 0, T1.isoformat())),
        # the frontier only moves back in time
        (
            Walk("c", frontier=T1.isoformat()),
            PageFacts(COUNT, "n", T2),
            Walk("n", Phase.WALKING, 0, T1.isoformat()),
        ),
    ],
)
def test_after_page(walk: Walk, page: PageFacts, expected: Walk) -> None:
    assert after_page(walk, page, COUNT) == expected


def test_only_empty_and_met_end_a_walk() -> None:
    ended = {phase for phase in Phase if Walk(phase=phase).ended}
    assert ended == {Phase.CONFIRMED, Phase.MET}


def test_restart_keeps_the_frontier_and_drops_the_cursor() -> None:
    walk = Walk("c", Phase.PROBABLE_START, 2, T1.isoformat())
    assert restarted(walk) == Walk(
        None, Phase.WALKING, 0, T1.isoformat(), refused=1, rejoined=False
    )
    assert restarted(restarted(walk)).refused == 2


@pytest.mark.parametrize(
    ("page", "refused"),
    [
        (PageFacts(COUNT, "n", T2), 3),  # the FSync after a restart, above the frontier
        (PageFacts(COUNT, "n", T1), 3),  # at the frontier's second: not past it
        (PageFacts(COUNT, None, T2), 3),  # no token: the same request again
        (PageFacts(COUNT, "n", T0), 0),  # older than anything the walk held: past it
        (PageFacts(COUNT, None, T0), 0),  # past it, even without a token
        (PageFacts(COUNT, "n", None), 3),  # a page without times proves nothing
    ],
)
def test_refusals_count_until_a_page_gets_past_the_frontier(page: PageFacts, refused: int) -> None:
    walk = Walk("c", Phase.WALKING, 0, T1.isoformat(), refused=3)
    assert after_page(walk, page, COUNT).refused == refused


def test_an_edge_only_page_after_a_restart_keeps_the_count() -> None:
    walk = Walk("c", Phase.WALKING, 0, T1.isoformat(), at=T1.isoformat(), edge=("m1",), refused=2)
    after = after_page(walk, PageFacts(1, "n", T1, ids=("m1",), edge=("m1",)), COUNT)
    assert (after.phase, after.refused) == (Phase.PROBABLE_START, 2)


@pytest.mark.parametrize(
    ("frontier", "oldest", "new", "expected"),
    [
        (T1, T2, 0, True),  # above the frontier, nothing new: a re-walk page
        (T1, T1, 0, True),  # at the frontier's second
        (T1, T2, 1, False),  # something new came with it: progress
        (T2, T1, 0, False),  # older than anything this walk held: progress
        (None, T2, 0, False),  # no frontier (a fresh walk): every page counts
        (T1, None, 0, False),  # a page without times
    ],
)
def test_is_rewalk(
    frontier: datetime | None, oldest: datetime | None, new: int, expected: bool
) -> None:
    walk = Walk(None, frontier=frontier.isoformat() if frontier else None)
    assert is_rewalk(walk, PageFacts(COUNT, "n", oldest), new) is expected


@pytest.mark.parametrize("raw", [None, "", "{", "[]", '{"phase": "nonsense"}', '{"no_token": "x"}'])
def test_unreadable_saved_walk_is_none(raw: str | None) -> None:
    assert Walk.from_json(raw) is None


def test_walk_round_trips_through_json() -> None:
    walk = Walk("c", Phase.PROBABLE_START, 3, T1.isoformat(), refused=4)
    assert Walk.from_json(walk.to_json()) == walk
    assert Walk.from_json('{"cursor": "c"}') == Walk("c")  # saved before `refused` existed


EDGE = ("m1", "m2")


@pytest.mark.parametrize(
    ("page", "phase"),
    [
        # only the cursor's own edge came back, nothing older: an inclusive lower bound, or a
        # short page whose one slot went to the repeat; one more BSync settles it
        (PageFacts(1, "n", T2, ids=("m1",), edge=("m1",)), Phase.PROBABLE_START),
        (PageFacts(2, None, T2, ids=EDGE, edge=EDGE), Phase.PROBABLE_START),
        # an older message beside the edge: the walk goes on
        (PageFacts(2, "n", T1, ids=("m1", "m0"), edge=("m0",)), Phase.PROBABLE_START),
        # a message of the edge's second we did not see before: not the edge
        (PageFacts(1, "n", T2, ids=("m3",), edge=("m3",)), Phase.PROBABLE_START),
    ],
)
def test_a_bsync_page_of_the_cursors_edge_is_the_start(page: PageFacts, phase: Phase) -> None:
    walk = Walk("c", Phase.WALKING, 0, T2.isoformat(), T2.isoformat(), EDGE)
    assert after_page(walk, page, COUNT).phase is phase


def test_two_edge_only_answers_in_a_row_confirm_the_start() -> None:
    walk = Walk("c", Phase.WALKING, 0, T2.isoformat(), T2.isoformat(), EDGE)
    first = after_page(walk, PageFacts(1, "n", T2, ids=("m1",), edge=("m1",)), COUNT)
    assert (first.phase, first.cursor, first.repeat, first.edge) == (
        Phase.PROBABLE_START,
        "n",
        "n",
        EDGE,
    )
    assert Walk.from_json(first.to_json()) == first
    again = after_page(first, PageFacts(1, "n2", T2, ids=("m2",), edge=("m2",)), COUNT)
    assert again.phase is Phase.CONFIRMED
    assert after_page(first, PageFacts(0, None, None), COUNT).phase is Phase.CONFIRMED
    # anything older: the walk goes on, and the next edge-only page is a first one again
    older = after_page(first, PageFacts(COUNT, "o", T1, ids=("m0",), edge=("m0",)), COUNT)
    assert (older.phase, older.repeat) == (Phase.WALKING, None)
    # without a token: the cursor is kept and the same request, answered so again, confirms
    kept = after_page(walk, PageFacts(1, None, T2, ids=("m1",), edge=("m1",)), COUNT)
    assert (kept.phase, kept.cursor, kept.no_token) == (Phase.PROBABLE_START, "c", 1)
    assert after_page(kept, PageFacts(1, None, T2, ids=("m1",), edge=("m1",)), COUNT).ended


def test_the_edge_proves_nothing_for_an_fsync_an_unknown_edge_or_a_full_page() -> None:
    page = PageFacts(1, "n", T2, ids=("m1",), edge=("m1",))
    assert after_page(Walk(None, edge=EDGE), page, COUNT).phase is Phase.PROBABLE_START
    assert after_page(Walk("c"), page, COUNT).phase is Phase.PROBABLE_START
    # count = 1: the repeat took the only slot, there was no room for an older message
    assert after_page(Walk("c", edge=EDGE), page, 1).phase is Phase.WALKING


def test_a_page_moves_the_edge_and_a_page_without_token_keeps_it() -> None:
    walk = Walk("c", edge=EDGE, at=T2.isoformat())
    moved = after_page(walk, PageFacts(COUNT, "n", T1, ids=("m0",), edge=("m0",)), COUNT)
    assert (moved.edge, moved.at) == (("m0",), T1.isoformat())
    kept = after_page(walk, PageFacts(COUNT, None, T1, ids=("m0",), edge=("m0",)), COUNT)
    assert (kept.edge, kept.at, kept.cursor) == (EDGE, T2.isoformat(), "c")
    assert Walk.from_json(moved.to_json()) == moved
    again = Walk.from_json(moved.to_json())
    assert again is not None and (again.edge, again.at) == (moved.edge, moved.at)


def test_a_rewalk_page_is_free_only_when_it_moved_older() -> None:
    walk = Walk("c", frontier=T1.isoformat(), at=T2.isoformat())
    assert is_rewalk(walk, PageFacts(COUNT, "n", datetime(2024, 1, 15, tzinfo=UTC)), 0)
    assert not is_rewalk(walk, PageFacts(COUNT, "n", T2), 0)  # the same answer again
    assert is_rewalk(restarted(walk), PageFacts(COUNT, "n", T2), 0)  # the FSync after a restart


def test_a_full_page_of_only_the_edge_asks_again_for_twice_as_many() -> None:
    """count = 1 and an inclusive lower bound: the covered message takes the only slot."""
    walk = Walk("c", Phase.WALKING, 0, T1.isoformat(), at=T1.isoformat(), edge=("m1",))
    assert page_count(walk, 1) == 1
    full = after_page(walk, PageFacts(1, "n", T1, ids=("m1",), edge=("m1",)), 1)
    assert (full.cursor, full.phase, full.widen, full.edge) == ("n", Phase.WALKING, 1, ("m1",))
    assert page_count(full, 1) == 2
    again = after_page(full, PageFacts(2, "o", T1, ids=("m1",) * 2, edge=("m1",)), 2)
    assert (again.widen, page_count(again, 1)) == (2, 4)
    # Something older came back: the configured count again.
    older = after_page(again, PageFacts(4, "p", T0, ids=("m1", "m0"), edge=("m0",)), 4)
    assert (older.widen, older.phase, page_count(older, 1)) == (0, Phase.WALKING, 1)
    # Without a token the cursor stays, and the streak counts as for any page without one.
    kept = after_page(walk, PageFacts(1, None, T1, ids=("m1",), edge=("m1",)), 1)
    assert (kept.cursor, kept.no_token, kept.widen) == ("c", 1, 1)


def test_page_count_stops_at_zoom_s_maximum() -> None:
    assert page_count(Walk(widen=3), 50) == 250
    assert page_count(Walk(widen=40), 1) == 250
    assert page_count(Walk(widen=0), 250) == 250


@pytest.mark.parametrize(
    ("cursor", "page", "expected"),
    [
        ("c", PageFacts(COUNT, "n", T2, new=1), True),  # BSync news: depth, whatever the time
        (None, PageFacts(COUNT, "n", T2, new=1), False),  # FSync news: the newest end moved
        (None, PageFacts(COUNT, "n", T0), True),  # older than the frontier
        ("c", PageFacts(COUNT, "n", T1), False),  # at it, nothing new
        ("c", PageFacts(COUNT, "n", None), False),  # no times, nothing new
        ("c", PageFacts(COUNT, "n", None, new=2), True),  # no times, but news
    ],
)
def test_advanced(cursor: str | None, page: PageFacts, expected: bool) -> None:
    assert advanced(Walk(cursor, frontier=T1.isoformat()), page) is expected


def test_a_re_walk_page_in_the_same_second_moved_only_if_its_messages_differ() -> None:
    walk = Walk("c", frontier=T1.isoformat(), at=T2.isoformat(), edge=("m1", "m2"))
    other = PageFacts(COUNT, "n", T2, ids=("m3", "m4"), edge=("m3", "m4"))
    same = PageFacts(COUNT, "n", T2, ids=("m2", "m1"), edge=("m2", "m1"))
    assert is_rewalk(walk, other, 0)
    assert not is_rewalk(walk, same, 0)  # the same answer again costs budget
    # A page of several seconds answered again: its oldest second is the edge it left.
    again = PageFacts(COUNT, "n", T2, ids=("m9", "m1", "m2"), edge=("m1", "m2"))
    assert not is_rewalk(walk, again, 0)


def _edge_only(token: str | None) -> PageFacts:
    """A short page holding only the cursor's edge message (m1, of second T1)."""
    return PageFacts(1, token, T1, ids=("m1",), edge=("m1",))


def _at_edge(**fields: object) -> Walk:
    base = {"cursor": "c", "at": T1.isoformat(), "edge": ("m1",)}
    return Walk(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("walk", "token", "expected"),
    [
        # first such answer: probable, its token to be confirmed; the streak and the
        # frontier (none yet) set from the page
        (_at_edge(no_token=2), "n", ("n", Phase.PROBABLE_START, 0, T1.isoformat(), "n")),
        # a repeat kept from another cursor is no confirmation
        (_at_edge(repeat="x"), "n", ("n", Phase.PROBABLE_START, 0, T1.isoformat(), "n")),
        # the second in a row, from the token the first gave: confirmed, streak cleared
        (_at_edge(repeat="c", no_token=2), "n", ("c", Phase.CONFIRMED, 0, T1.isoformat(), "c")),
        # without a token: the same request again, the streak grows...
        (_at_edge(), None, ("c", Phase.PROBABLE_START, 1, T1.isoformat(), "c")),
        # ...and fails the walk at the limit
        (
            _at_edge(no_token=NO_TOKEN_LIMIT - 1),
            None,
            ("c", Phase.NO_TOKEN, NO_TOKEN_LIMIT, T1.isoformat(), "c"),
        ),
    ],
)
def test_after_an_edge_only_short_page(
    walk: Walk, token: str | None, expected: tuple[object, ...]
) -> None:
    after = after_page(walk, _edge_only(token), COUNT)
    assert (after.cursor, after.phase, after.no_token, after.frontier, after.repeat) == expected
