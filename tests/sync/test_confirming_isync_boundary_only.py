"""A short ISync page whose one slot is the boundary message (the newest one the token
already covers) brings nothing new, yet newer messages may remain (count is loose; the
boundary may take a slot of an ISync page; fakezoom's `isync_boundary` + `short`). One such
answer is not "caught up": only an empty page or two such answers in a row are, so a message
of the listed second is not lost when `synced_to` already equals the listed time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.sync.conftest import Bed, bed  # noqa: F401  (fixture)
from tests.sync.fakezoom import make_message


def _at(n: int, moment: datetime) -> dict[str, Any]:
    m = make_message(n)
    m["date_time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return m


async def test_a_boundary_only_confirming_isync_earns_another(bed: Bed) -> None:  # noqa: F811
    listed = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    clock = {"t": listed - timedelta(hours=1)}
    now = lambda: clock["t"]  # noqa: E731 - the virtual clock (Zoom's = ours)
    late = _at(99, listed)

    def delay(seconds: float) -> float:
        # the confirming ISync waits for the listed second to be over; meanwhile a second
        # message of that second is visible (2 s after its date_time)
        if late not in bed.zoom.messages:
            bed.zoom.messages.append(late)
        clock["t"] += timedelta(seconds=seconds)
        return 0.0

    bed.zoom.messages = [_at(i, listed - timedelta(hours=1, minutes=10 - i)) for i in range(3)]
    await bed.run_pass(fast=True, now=now, delay=delay)
    assert bed.archived_ids() == bed.truth_ids()
    bed.zoom.messages.append(_at(3, listed))
    bed.zoom.isync_boundary = True
    isyncs: list[int] = []

    def short(n: int, kind: str) -> int | None:
        if kind == "ISync":
            isyncs.append(n)
            return 1 if len(isyncs) == 2 else None  # the confirming ISync: one slot
        return None

    bed.zoom.short = short
    clock["t"] = listed + timedelta(milliseconds=500)
    supervisor = await bed.run_pass(fast=True, now=now, delay=delay)
    for _ in range(2):
        clock["t"] += timedelta(minutes=5)
        supervisor = await bed.run_pass(fast=True, now=now, delay=delay)
    assert supervisor.incomplete() == {}  # `run --once` exits 0 ...
    missing = bed.truth_ids() - bed.archived_ids()
    assert not missing, f"archive lacks {missing} although every pass said complete ({isyncs})"
