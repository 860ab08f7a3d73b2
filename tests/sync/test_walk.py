"""The walk rule (`archiver/sync/walk.py`), one row per case: what a page proves and what not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from archiver.sync.walk import (
    NO_TOKEN_LIMIT,
    PageFacts,
    Phase,
    Walk,
    after_page,
    is_rewalk,
    restarted,
)

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
    assert restarted(walk) == Walk(None, Phase.WALKING, 0, T1.isoformat())


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
    walk = Walk("c", Phase.PROBABLE_START, 3, T1.isoformat())
    assert Walk.from_json(walk.to_json()) == walk
