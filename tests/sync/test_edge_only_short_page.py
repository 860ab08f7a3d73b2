"""A short BSync page holding only the repeated covered ("edge") message is no proof of the
start: with an inclusive BSync it is what a page looks like whose only slot went to the
repeat while older messages remain. One more BSync settles it, in the backfill and in the
gap fill after 7035 alike (walk.py)."""

from __future__ import annotations

from tests.sync.conftest import SESSION, Bed, bed  # noqa: F401  (fixture)


def _one_short_bsync(which: int) -> tuple[list[int], object]:
    bsyncs: list[int] = []

    def short(n: int, kind: str) -> int | None:
        if kind == "BSync":
            bsyncs.append(n)
            return 1 if len(bsyncs) == which else None  # one short page: just the repeat
        return None

    return bsyncs, short


async def test_backfill_goes_on_past_a_short_page_of_the_edge(bed: Bed) -> None:  # noqa: F811
    bed.zoom.inclusive = True
    bed.zoom.max_calls = 300
    bed.zoom.add(30)
    _, bed.zoom.short = _one_short_bsync(2)  # type: ignore[assignment]
    for _ in range(4):
        supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    missing = bed.truth_ids() - bed.archived_ids()
    assert not missing, f"backfill {bed.state.get_meta('walk:' + SESSION)} lacks {len(missing)}"


async def test_gap_fill_goes_on_past_a_short_page_of_the_edge(bed: Bed) -> None:  # noqa: F811
    bed.zoom.inclusive = True
    bed.zoom.max_calls = 300
    bed.zoom.add(3)
    await bed.run_pass(fast=True)
    assert bed.archived_ids() == bed.truth_ids()
    bed.zoom.add(25)  # > count: ISync answers 7035, the gap walk goes back to what is held
    _, bed.zoom.short = _one_short_bsync(1)  # type: ignore[assignment]
    for _ in range(3):
        supervisor = await bed.run_pass(fast=True)
    assert supervisor.incomplete() == {}
    missing = bed.truth_ids() - bed.archived_ids()
    assert not missing, f"gap closed early: lacks {sorted(missing)}"
