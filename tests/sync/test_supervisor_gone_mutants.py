"""What the supervisor does after a 12004 (`Supervisor._after_gone`), step by step: the session's
failure record cleared, the one retry after `backoff(1)`, the metric of incomplete sessions,
and the warning that confirms a session gone. Each test kills mutants of `make mutate` that the
pass-level tests in test_confirming_isync.py let through (docs/TESTING.md)."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from archiver.errors import SessionGoneError, ZoomError
from archiver.sync.supervisor import Supervisor
from archiver.zoom.models import SyncPage
from tests.sync.conftest import SESSION, Bed
from tests.sync.fakezoom import FakeZoom


class Scripted(FakeZoom):
    """Answers each sync call with the next scripted error ("gone", "fail"), then normally."""

    script: list[str]

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        if self.script:
            what = self.script.pop(0)
            self.calls.append((sync_type, sync_token))
            if what == "gone":
                raise SessionGoneError(
                    "session does not exist upstream", status=404, code=12004, session_id=session_id
                )
            raise ZoomError("a 502 from a gateway", session_id=session_id)
        return await super().sync(session_id, sync_type, count, sync_token)


class Watched(Supervisor):
    """Records, after each 12004, whether the session counts as incomplete in the metric."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_gone: list[bool] = []

    def _after_gone(self, session_id: str) -> None:
        super()._after_gone(session_id)
        self.after_gone.append(session_id in self.incomplete_sessions)


async def run_pass(bed: Bed, script: list[str], backoffs: list[int]) -> Watched:
    zoom = Scripted()
    zoom.script = script
    bed.zoom = zoom
    bed.listing.zoom = zoom
    zoom.add(3)

    def backoff(attempt: int) -> float:
        backoffs.append(attempt)
        return 0.0

    supervisor = await bed.run_pass(fast=True, backoff=backoff, supervisor=Watched)
    assert isinstance(supervisor, Watched)
    return supervisor


async def test_one_12004_is_retried_after_the_first_backoff_and_counts_as_incomplete(
    bed: Bed,
) -> None:
    backoffs: list[int] = []
    supervisor = await run_pass(bed, ["gone"], backoffs)
    # Between the 12004 and its retry the list shows messages we do not hold.
    assert supervisor.after_gone == [True]
    assert backoffs == [1]
    assert supervisor.incomplete() == {} and supervisor.incomplete_sessions == set()
    assert bed.archived_ids() == bed.truth_ids()


async def test_the_second_12004_confirms_gone_says_so_and_leaves_the_metric(bed: Bed) -> None:
    backoffs: list[int] = []
    with capture_logs() as logs:
        supervisor = await run_pass(bed, ["gone", "gone"], backoffs)
    assert supervisor.after_gone == [True, False]
    assert supervisor.incomplete() == {}
    [confirmed] = [entry for entry in logs if entry["event"] == "session_gone_confirmed"]
    listed = bed.state.get_session(SESSION).last_message_time  # type: ignore[union-attr]
    assert listed
    assert (confirmed["log_level"], confirmed["session_id"], confirmed["listed"]) == (
        "warning",
        SESSION,
        listed,
    )


async def test_a_12004_after_a_failure_clears_the_failure_record(bed: Bed) -> None:
    """`status` reads `failed:<id>` from the state: a session Zoom then answers for (gone,
    confirmed) has no failure left to show."""
    backoffs: list[int] = []
    supervisor = await run_pass(bed, ["fail", "gone", "gone"], backoffs)
    assert supervisor.incomplete() == {}
    assert not bed.state.get_meta(f"failed:{SESSION}")
    assert backoffs == [1, 1]  # the failure's first attempt, then the 12004's retry
