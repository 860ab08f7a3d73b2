"""`sync.history_start` moved earlier after the first walk is walked back to (review of issue
13: the setting was read only on the first walk, so a start set too late and corrected later
lost the months between for good, each pass exiting 0)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.verify import verify_archive
from tests.helpers import (
    archived_messages,
    assert_matches_truth,
    load,
    truth_messages,
    write_config,
)


def newest_day_per_session(sim: Simulator) -> dict[str, date]:
    newest: dict[str, date] = {}
    for (session_id, _), record in truth_messages(sim).items():
        day = datetime.fromisoformat(record["date_time"].replace("Z", "+00:00")).date()
        newest[session_id] = max(newest.get(session_id, day), day)
    return newest


async def test_a_history_start_moved_earlier_is_walked_back_to(tmp_path: Path) -> None:
    config = SimulatorConfig(seed=5, sessions=40, history_days=300, attachment_probability=0.0)
    async with Simulator(dataclasses.replace(config)) as sim:
        newest = newest_day_per_session(sim)
        days = sorted(newest.values())
        late = days[len(days) // 2] + timedelta(days=1)  # about half the sessions are older
        older = {sid for sid, day in newest.items() if day < late}
        assert older and len(older) < len(newest)

        path = write_config(tmp_path, sim, sync=f'history_start = "{late.isoformat()}"')
        first = await daemon.run(load(path), once=True)
        assert first.ok, first.summary()
        root = tmp_path / "archive"
        held = {sid for sid, _ in archived_messages(root)}
        assert held.isdisjoint(older)  # the late start did hide them: the test has a point

        early = min(days) - timedelta(days=40)
        path = write_config(tmp_path, sim, sync=f'history_start = "{early.isoformat()}"')
        second = await daemon.run(load(path), once=True)
        assert second.ok, second.summary()
        assert_matches_truth(root, sim)
        assert verify_archive(root).ok
        # Walked back once: a third pass finds nothing new.
        third = await daemon.run(load(path), once=True)
        assert third.ok and third.new_messages == 0


def test_a_history_start_in_the_future_is_refused(tmp_path: Path) -> None:
    from archiver.config import ConfigError, load_config

    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    path = tmp_path / "zsa.toml"
    path.write_text(f'[sync]\nhistory_start = "{tomorrow.isoformat()}"\n', encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.key == "sync.history_start"
        assert "in the future" in str(exc)
    else:
        raise AssertionError("a future history_start was accepted")
