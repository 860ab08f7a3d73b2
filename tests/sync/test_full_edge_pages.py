"""Full BSync pages that hold only what the cursor already covers (an inclusive lower bound
whose repeats fill `count`): the walk asks again for twice as many, up to Zoom's maximum,
and fails the step, saying so, if even that page holds nothing older. Before, a walk with
`count = 1` against such a Zoom asked the same request for ever (model soak seed 1000333:
747 BSyncs of the one covered message, `run --once` never ended)."""

from __future__ import annotations

from typing import Any

import pytest

from archiver.config import MAX_SYNC_COUNT
from archiver.errors import ZoomSessionError
from archiver.sync.session import SessionSync
from archiver.sync.walk import Phase
from archiver.zoom.models import SyncPage
from tests.sync.conftest import SESSION, Bed
from tests.sync.fakezoom import make_message


class EdgeOnly:
    """FSync: the newest message; every BSync: `count` copies of it (the covered message
    repeated in every slot), each with a new token."""

    def __init__(self, older: int = 0) -> None:
        self.asked: list[tuple[str, int]] = []
        self.older = older  # from this many BSyncs on, one older message comes too

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: Any = None
    ) -> SyncPage:
        self.asked.append((sync_type, count))
        newest = make_message(10)
        if sync_type == "FSync":
            return SyncPage(messages=[newest], sync_token="t0")
        bsyncs = sum(1 for kind, _ in self.asked if kind == "BSync")
        if self.older and bsyncs > self.older:
            page = [newest, make_message(1)][:count] if count > 1 else [newest]
            if bsyncs > self.older + 1:
                page = []  # the start of history
            return SyncPage(messages=page, sync_token=f"t{len(self.asked)}")
        return SyncPage(messages=[newest] * count, sync_token=f"t{len(self.asked)}")


def sync_of(bed: Bed, api: Any, count: int) -> SessionSync:
    return SessionSync(api, bed.writer, bed.state, count=count, pause=lambda _n: 0.0)


async def test_pages_of_only_the_covered_message_fail_at_zoom_s_maximum_count(bed: Bed) -> None:
    zoom = EdgeOnly()
    sync = sync_of(bed, zoom, 1)
    await sync.incremental(SESSION)
    with pytest.raises(ZoomSessionError, match=f"count={MAX_SYNC_COUNT}, Zoom's maximum"):
        await sync.backfill(SESSION, 100, lambda: False)
    asked = [count for kind, count in zoom.asked if kind == "BSync"]
    assert asked == [1, 2, 4, 8, 16, 32, 64, 128, 250]
    walk = sync.walk_of(SESSION)
    assert walk.phase is Phase.WALKING and walk.cursor is not None  # nothing concluded
    assert not bed.state.get_session(SESSION).backfill_done  # type: ignore[union-attr]
    # The next try asks at the maximum at once, and fails the same way.
    with pytest.raises(ZoomSessionError):
        await sync.backfill(SESSION, 100, lambda: False)
    assert zoom.asked[-1] == ("BSync", MAX_SYNC_COUNT)


async def test_a_wider_page_that_brings_an_older_message_goes_back_to_the_count(
    bed: Bed,
) -> None:
    zoom = EdgeOnly(older=2)
    sync = sync_of(bed, zoom, 1)
    await sync.incremental(SESSION)
    result = await sync.backfill(SESSION, 100, lambda: False, confirm=True)
    assert result.backfill_done
    # two full pages of the repeat (1, then 2), the older message at 4, then back to 1
    assert [count for kind, count in zoom.asked if kind == "BSync"] == [1, 2, 4, 1]
    assert bed.archived_ids() == {make_message(10)["message_id"], make_message(1)["message_id"]}
