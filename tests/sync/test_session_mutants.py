"""SessionSync.incremental on its own, step by step (issue 17, survivor 2).

Each ISync page's `sync_token` must be saved once the page is durable, and the next ISync
(in this step or after a restart) must send it. Without the save nothing is lost (the old
token repeats the same window and the writer absorbs the repeats), so only a test that looks
at the tokens themselves can tell.
"""

from __future__ import annotations

from typing import Any

import pytest

from archiver.errors import ZoomResponseError
from archiver.sync.session import SessionSync
from tests.sync.conftest import SESSION, Bed


def newest_token(bed: Bed) -> str | None:
    current = bed.state.get_session(SESSION)
    assert current is not None
    return current.newest_token


def token_of_call(bed: Bed, number: int) -> str:
    """The token the page answering request `number` carried."""
    issued = {at: token for token, (_lo, _hi, at) in bed.zoom._windows.items()}
    return issued[number]


async def test_incremental_saves_each_isync_token_and_sends_it_next(bed: Bed) -> None:
    bed.zoom.add(3)
    await bed.session_sync().incremental(SESSION)  # first contact: FSync
    assert [kind for kind, _ in bed.zoom.calls] == ["FSync"]
    assert newest_token(bed) == token_of_call(bed, 0)

    for _ in range(3):
        bed.zoom.add(2)
        before = len(bed.zoom.calls)
        sent = newest_token(bed)
        # A new SessionSync each time, as after a restart: only the state carries the token.
        result = await bed.session_sync().incremental(SESSION)
        assert bed.zoom.calls[before:] == [("ISync", sent)]
        assert result.new == 2
        assert newest_token(bed) == token_of_call(bed, before)
        assert newest_token(bed) != sent

    # Caught up: the next ISync comes back empty, nothing archived twice.
    before = len(bed.zoom.calls)
    result = await bed.session_sync().incremental(SESSION)
    assert bed.zoom.calls[before:] == [("ISync", token_of_call(bed, before - 1))]
    assert (result.new, result.changed) == (0, 0)
    assert bed.archived_ids() == bed.truth_ids()


async def test_full_isync_pages_chain_their_tokens_within_one_step(bed: Bed) -> None:
    bed.zoom.add(2)
    await bed.session_sync().incremental(SESSION)
    bed.zoom.add(bed.count)  # one full page: ISync is repeated
    before = len(bed.zoom.calls)
    await bed.session_sync().incremental(SESSION)
    calls = bed.zoom.calls[before:]
    assert [kind for kind, _ in calls] == ["ISync", "ISync"]
    assert calls[1][1] == token_of_call(bed, before)
    assert newest_token(bed) == token_of_call(bed, before + 1)


class RefusingWriter:
    """The real writer, refusing (as for a record it cannot take) the next page."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self.refuse = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    async def append_messages(self, *args: Any, **kwargs: Any) -> Any:
        if self.refuse:
            raise ValueError("record cannot be archived")
        return await self._writer.append_messages(*args, **kwargs)


async def test_the_token_is_not_saved_for_a_page_that_is_not_durable(bed: Bed) -> None:
    bed.zoom.add(3)
    writer = RefusingWriter(bed.writer)
    sync = SessionSync(bed.zoom, writer, bed.state, count=bed.count)
    await sync.incremental(SESSION)
    saved = newest_token(bed)
    bed.zoom.add(2)
    writer.refuse = True
    with pytest.raises(ZoomResponseError, match="page refused by the archive"):
        await sync.incremental(SESSION)
    assert newest_token(bed) == saved  # the page is not in the manifest: its token is not kept
    writer.refuse = False
    before = len(bed.zoom.calls)
    result = await sync.incremental(SESSION)
    assert bed.zoom.calls[before] == ("ISync", saved)
    assert result.new == 2
    assert bed.archived_ids() == bed.truth_ids()
