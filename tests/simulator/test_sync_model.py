"""The sync model as a pure function: tables for each case, a property for whole walks."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.simulator.sync import (
    Quirks,
    TooManyNew,
    Window,
    decode_token,
    encode_token,
    sync_page,
)

TIMES = [10, 20, 30, 40, 50]
OVERLAP = Quirks(overlap=True)
ASCENDING = Quirks(ascending=True)
DUPLICATE = Quirks(duplicate=True)


@pytest.mark.parametrize(
    ("sync_type", "count", "window", "quirks", "page", "new_window"),
    [
        ("FSync", 2, None, Quirks(), [4, 3], Window(40, 50)),
        ("FSync", 10, None, Quirks(), [4, 3, 2, 1, 0], Window(10, 50)),
        ("BSync", 2, Window(40, 50), Quirks(), [2, 1], Window(20, 50)),
        ("BSync", 5, Window(20, 50), Quirks(), [0], Window(10, 50)),
        ("BSync", 2, Window(10, 50), Quirks(), [], Window(10, 50)),
        ("ISync", 2, Window(10, 30), Quirks(), [4, 3], Window(10, 50)),
        ("ISync", 2, Window(10, 50), Quirks(), [], Window(10, 50)),
        ("ISync", 5, Window(0, 0), Quirks(), [4, 3, 2, 1, 0], Window(0, 50)),
        # A window edge between two messages (a crafted token) still splits exactly.
        ("BSync", 5, Window(35, 50), Quirks(), [2, 1, 0], Window(10, 50)),
        ("ISync", 5, Window(10, 35), Quirks(), [4, 3], Window(10, 50)),
        # overlap: the boundary comes back inside `count`, never alone.
        ("BSync", 3, Window(40, 50), OVERLAP, [3, 2, 1], Window(20, 50)),
        ("ISync", 3, Window(10, 30), OVERLAP, [4, 3, 2], Window(10, 50)),
        ("BSync", 3, Window(10, 50), OVERLAP, [], Window(10, 50)),
        ("ISync", 3, Window(10, 50), OVERLAP, [], Window(10, 50)),
        ("BSync", 1, Window(40, 50), OVERLAP, [2], Window(30, 50)),
        ("FSync", 3, None, OVERLAP, [4, 3, 2], Window(30, 50)),
        # ascending: oldest first, same window.
        ("FSync", 3, None, ASCENDING, [2, 3, 4], Window(30, 50)),
        ("BSync", 2, Window(40, 50), ASCENDING, [1, 2], Window(20, 50)),
        # duplicate: one message twice, the page still within `count`.
        ("FSync", 3, None, DUPLICATE, [4, 3, 3], Window(40, 50)),
        ("FSync", 1, None, DUPLICATE, [4], Window(50, 50)),
        ("ISync", 3, Window(10, 20), DUPLICATE, [3, 2, 2], Window(10, 40)),
        # Everything at once: one new message per page, yet progress.
        ("ISync", 3, Window(10, 30), Quirks(True, False, True), [3, 2, 2], Window(10, 40)),
    ],
)
def test_sync_page_table(
    sync_type: str,
    count: int,
    window: Window | None,
    quirks: Quirks,
    page: list[int],
    new_window: Window,
) -> None:
    assert sync_page(TIMES, sync_type, count, window, quirks) == (page, new_window)


@pytest.mark.parametrize(
    ("sync_type", "count", "window", "quirks", "short", "page", "new_window"),
    [
        # Cut short while older messages remain; the window covers what was returned.
        ("FSync", 4, None, Quirks(), 2, [4, 3], Window(40, 50)),
        ("BSync", 4, Window(50, 50), Quirks(), 1, [3], Window(40, 50)),
        ("BSync", 3, Window(40, 50), Quirks(), 2, [2, 1], Window(20, 50)),
        # The page reaches the start anyway (no more candidates than `short`): unchanged.
        ("BSync", 5, Window(30, 50), Quirks(), 2, [1, 0], Window(10, 50)),
        ("FSync", 10, None, Quirks(), 5, [4, 3, 2, 1, 0], Window(10, 50)),
        ("BSync", 5, Window(10, 50), Quirks(), 3, [], Window(10, 50)),
        # ISync cut short (the state draws it only with short_isync_probability) gives the
        # oldest of the new messages, the rest come next; `short` >= count changes nothing.
        ("ISync", 3, Window(10, 20), Quirks(), 1, [2], Window(10, 30)),
        ("ISync", 3, Window(10, 20), Quirks(), 2, [3, 2], Window(10, 40)),
        ("FSync", 2, None, Quirks(), 2, [4, 3], Window(40, 50)),
        # The quirks' slots come out of the short page, which stays short.
        ("BSync", 4, Window(50, 50), OVERLAP, 2, [4, 3], Window(40, 50)),
        ("BSync", 4, Window(50, 50), OVERLAP, 1, [3], Window(40, 50)),
        ("FSync", 4, None, DUPLICATE, 3, [4, 3, 3], Window(40, 50)),
        ("FSync", 4, None, ASCENDING, 2, [3, 4], Window(40, 50)),
    ],
)
def test_short_page_table(
    sync_type: str,
    count: int,
    window: Window | None,
    quirks: Quirks,
    short: int,
    page: list[int],
    new_window: Window,
) -> None:
    assert sync_page(TIMES, sync_type, count, window, quirks, short=short) == (page, new_window)


INCLUSIVE = Quirks(inclusive=True)


@pytest.mark.parametrize(
    ("count", "window", "page", "new_window"),
    [
        # every BSync page repeats the window's oldest message, inside `count`
        (3, Window(50, 50), [4, 3, 2], Window(30, 50)),
        (2, Window(30, 50), [2, 1], Window(20, 50)),
        # at the start of history: that message alone, never an empty page
        (3, Window(10, 50), [0], Window(10, 50)),
        # count = 1: no room beside it, so the page moves on without it
        (1, Window(30, 50), [1], Window(20, 50)),
    ],
)
def test_inclusive_bsync_table(
    count: int, window: Window, page: list[int], new_window: Window
) -> None:
    assert sync_page(TIMES, "BSync", count, window, INCLUSIVE) == (page, new_window)


def test_overlap_full_isync_page_leaves_the_newest_for_the_next_call() -> None:
    # `count` new messages: the known boundary (index 1) takes a slot, index 4 waits.
    page, window = sync_page(TIMES, "ISync", 3, Window(10, 20), OVERLAP)
    assert (page, window) == ([3, 2, 1], Window(10, 40))
    assert sync_page(TIMES, "ISync", 3, window, OVERLAP) == ([4, 3], Window(10, 50))


def test_isync_with_more_new_than_count_is_7035() -> None:
    with pytest.raises(TooManyNew):
        sync_page(TIMES, "ISync", 2, Window(10, 20), Quirks())


def test_fsync_of_an_empty_session_gives_an_empty_window() -> None:
    assert sync_page([], "FSync", 10, None) == ([], Window(0, 0))


def test_token_round_trip_and_format() -> None:
    token = encode_token("abc123", Window(1642407207014, 1642407207999))
    assert base64.b64decode(token) == b"abc123_1642407207014_1642407207999"
    assert decode_token(token, "abc123") == Window(1642407207014, 1642407207999)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64!",
        _b64("other_1_2"),  # another session's token
        _b64("abc123_2_1"),  # older after newer
        _b64("abc123_-1_2"),
        _b64("abc123_1_+2"),
        _b64("abc123_1"),
        _b64("abc123_x_2"),
        base64.b64encode(b"\xff\xfe_1_2").decode(),
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    assert decode_token(token, "abc123") is None


def test_zoom_example_token_decodes() -> None:
    # The token in Zoom's own spec example.
    example = "MFgyQ0Z3UDkwaF8xNjQyNDA3MjA3MDE0XzE2NDI0MDcyMDcwMTQ="
    assert decode_token(example, "0X2CFwP90h") == Window(1642407207014, 1642407207014)


quirk_sets = st.builds(Quirks, st.booleans(), st.booleans(), st.booleans())


@given(
    total=st.integers(0, 60),
    count=st.integers(1, 12),
    quirks=quirk_sets,
    gaps=st.lists(st.integers(1, 5), min_size=60, max_size=60),
    shorts=st.lists(st.none() | st.integers(1, 11), min_size=64, max_size=64),
)
def test_fsync_then_bsync_walk_sees_every_message(
    total: int, count: int, quirks: Quirks, gaps: list[int], shorts: list[int | None]
) -> None:
    times = [sum(gaps[: i + 1]) for i in range(total)]
    page, window = sync_page(times, "FSync", count, None, quirks, short=shorts[-1])
    seen = set(page)
    for short in shorts[: total + 2]:
        assert len(page) <= count
        page, window = sync_page(times, "BSync", count, window, quirks, short=short)
        if not page:
            break
        assert set(page) - seen, "a BSync page brought nothing new"
        seen |= set(page)
    else:
        pytest.fail("BSync never reached the start of history")
    assert seen == set(range(total))
    assert window == (Window(times[0], times[-1]) if times else Window(0, 0))


@given(
    before=st.integers(0, 30),
    added=st.integers(0, 30),
    count=st.integers(1, 12),
    quirks=quirk_sets,
)
def test_isync_delivers_exactly_the_new_messages(
    before: int, added: int, count: int, quirks: Quirks
) -> None:
    times = list(range(1, before + added + 1))
    _, window = sync_page(times[:before], "FSync", 250, None, quirks)
    if added > count:
        with pytest.raises(TooManyNew):
            sync_page(times, "ISync", count, window, quirks)
        return
    seen: set[int] = set()
    for _ in range(added + 2):
        page, window = sync_page(times, "ISync", count, window, quirks)
        new = {i for i in page if i >= before}
        if not new:
            break
        seen |= new
    assert seen == set(range(before, before + added))
    assert window.newer == (times[-1] if times else 0)
