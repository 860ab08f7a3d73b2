"""Edges of zoom/ratelimit.py that `make mutate` found untested (issue 17, docs/TESTING.md):
the log events an operator reads when Zoom relabels an endpoint or a daily cap is spent, and
the labels `status` shows."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from archiver.zoom.ratelimit import (
    DECREASE,
    ECHO_WINDOW,
    RECOVERY_PER_SECOND,
    BudgetExhausted,
    Budgets,
    LabelLimit,
)
from tests.zoom.test_ratelimit import DAILY_BODY, MIDNIGHT, FakeTime, TopJitter, make_budgets


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def test_a_learned_category_is_logged_with_what_it_was() -> None:
    budgets = make_budgets(FakeTime())
    with capture_logs() as logs:
        assert budgets.learn_category("sync", "Heavy") is True
        assert budgets.learn_category("sync", "heavy") is False  # the same again: no line
    [entry] = named(logs, "rate_category_learned")
    assert (entry["endpoint"], entry["label"], entry["was"]) == ("sync", "heavy", "medium")
    assert entry["log_level"] == "info"
    assert named(logs, "rate_category_overridden") == []


def test_zoom_disagreeing_with_an_override_is_logged_and_the_override_stands() -> None:
    budgets = make_budgets(FakeTime(), labels={"get_message": "light"})
    with capture_logs() as logs:
        assert budgets.learn_category("get_message", "Heavy") is False
    [entry] = named(logs, "rate_category_overridden")
    assert (entry["endpoint"], entry["zoom"], entry["config"]) == ("get_message", "heavy", "light")
    assert named(logs, "rate_category_learned") == []
    assert budgets.label_for("get_message") == "light"
    # Zoom agreeing with the override is no disagreement.
    with capture_logs() as logs:
        budgets.learn_category("get_message", "Light")
    assert named(logs, "rate_category_overridden") == []
    assert [e["label"] for e in named(logs, "rate_category_learned")] == ["light"]


def test_a_category_learned_for_one_endpoint_leaves_the_others() -> None:
    budgets = make_budgets(FakeTime())
    budgets.learn_category("sync", "Heavy")
    assert budgets.learn_category("get_message", "Heavy") is True  # not the same endpoint
    labels = budgets.endpoint_labels()
    assert labels["sync"] == labels["get_message"] == "heavy"
    assert labels["list_sessions"] == "medium"
    budgets.learn_category("something_new", "Light")
    assert budgets.endpoint_labels()["something_new"] == "light"


async def test_a_spent_daily_cap_is_logged_once_with_the_label_and_count() -> None:
    fake = FakeTime(wall=MIDNIGHT - 3600)
    budgets = make_budgets(fake, share=0.5, table={"heavy": LabelLimit(1000, per_day=4)})
    for _ in range(2):
        await budgets.acquire("heavy")
    with capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(BudgetExhausted, match="heavy"):
                await budgets.acquire("heavy", max_wait=30)
    [entry] = named(logs, "rate_daily_cap_reached")
    assert (entry["label"], entry["used"], entry["log_level"]) == ("heavy", 2, "warning")


def test_a_qps_429_is_logged_with_its_pause_and_new_rate() -> None:
    budgets = make_budgets(FakeTime())
    with capture_logs() as logs:
        budgets.on_response("light", 429, {"Retry-After": "7"})
    [entry] = named(logs, "zoom_rate_limited")
    assert (entry["label"], entry["kind"], entry["log_level"]) == ("light", "qps", "warning")
    assert entry["pause"] == pytest.approx(7)
    current = budgets.snapshot()["light"]["current_rate"]
    assert current is not None and entry["rate"] == current
    assert budgets.snapshot()["light"]["pause_reason"] == "retry_after"


def test_a_daily_429_is_logged_as_daily() -> None:
    budgets = make_budgets(FakeTime(wall=MIDNIGHT - 100))
    with capture_logs() as logs:
        budgets.on_response("heavy", 429, {}, DAILY_BODY)
    [entry] = named(logs, "zoom_rate_limited")
    assert (entry["label"], entry["kind"]) == ("heavy", "daily")
    assert entry["pause"] > 100  # to the reset after midnight
    assert "rate" not in entry


def test_a_429_echoing_inside_the_window_extends_the_pause_as_retry_after() -> None:
    fake = FakeTime()
    budgets = make_budgets(fake)
    budgets.on_response("light", 429, {"Retry-After": "5"})
    rate = budgets.snapshot()["light"]["current_rate"]
    fake.advance(0.5)  # inside ECHO_WINDOW (1 s): the same burst, no second cut of the rate
    budgets.on_response("light", 429, {"Retry-After": "20"})
    snap = budgets.snapshot()["light"]
    assert snap["pause_reason"] == "retry_after"
    assert snap["paused_until"] == pytest.approx(fake.wall + 20)
    assert snap["current_rate"] == rate


def test_the_same_daily_429_twice_is_logged_once() -> None:
    budgets = make_budgets(FakeTime(wall=MIDNIGHT - 100))
    with capture_logs() as logs:
        budgets.on_response("heavy", 429, {}, DAILY_BODY)
        budgets.on_response("heavy", 429, {}, DAILY_BODY)  # the same instant: no longer
    assert len(named(logs, "zoom_rate_limited")) == 1
    assert budgets.snapshot()["heavy"]["pause_reason"] == "daily_limit"


def test_the_pause_reason_is_shown_only_while_paused() -> None:
    fake = FakeTime()
    budgets = make_budgets(fake)
    budgets.on_response("light", 429, {"Retry-After": "5"})
    assert budgets.snapshot()["light"]["pause_reason"] == "retry_after"
    fake.advance(6)
    snap = budgets.snapshot()["light"]
    assert (snap["pause_reason"], snap["paused_until"]) == (None, None)


def paused_for(budgets: Budgets, fake: FakeTime, label: str) -> float:
    until = budgets.snapshot()[label]["paused_until"]
    assert isinstance(until, float)
    return until - fake.wall


def test_a_response_one_echo_window_after_the_pause_resets_the_backoff() -> None:
    fake = FakeTime()
    budgets = make_budgets(fake, rng=TopJitter())
    budgets.on_response("light", 429, {})  # backoff attempt 0: 1 s
    assert paused_for(budgets, fake, "light") == pytest.approx(1.0)
    fake.advance(1.0 + ECHO_WINDOW)  # exactly the pause plus the echo window: through again
    budgets.on_response("light", 200, {})
    budgets.on_response("light", 429, {})
    assert paused_for(budgets, fake, "light") == pytest.approx(1.0)  # attempt 0 again


def test_a_response_during_the_pause_does_not_reset_the_backoff() -> None:
    fake = FakeTime()
    budgets = make_budgets(fake, rng=TopJitter())
    budgets.on_response("light", 429, {})  # attempt 0: 1 s
    fake.advance(0.25)
    budgets.on_response("light", 200, {})  # a request sent before the 429, answered late
    fake.advance(ECHO_WINDOW)  # past the echo window: a new 429 is a new event
    budgets.on_response("light", 429, {})
    assert paused_for(budgets, fake, "light") == pytest.approx(2.0)  # attempt 1


def test_a_429_exactly_one_echo_window_later_is_a_new_burst() -> None:
    fake = FakeTime()
    budgets = make_budgets(fake)
    ceiling = budgets.snapshot()["light"]["configured_rate"]
    assert isinstance(ceiling, float)
    budgets.on_response("light", 429, {"Retry-After": "0"})
    fake.advance(ECHO_WINDOW)
    budgets.on_response("light", 429, {"Retry-After": "0"})
    assert budgets.snapshot()["light"]["current_rate"] == pytest.approx(ceiling * DECREASE**2)


def test_the_rate_climbs_back_with_every_response_of_the_calm() -> None:
    fake = FakeTime()
    budgets = make_budgets(fake)
    ceiling = budgets.snapshot()["light"]["configured_rate"]
    assert isinstance(ceiling, float)
    budgets.on_response("light", 429, {"Retry-After": "1"})  # calm counts from the pause's end
    fake.advance(1.5)
    budgets.on_response("light", 200, {})  # half a second of calm
    expected = ceiling * DECREASE + RECOVERY_PER_SECOND * ceiling * 0.5
    assert budgets.snapshot()["light"]["current_rate"] == pytest.approx(expected)


def test_an_unlimited_label_backs_off_logs_no_rate_and_resets() -> None:
    fake = FakeTime()
    budgets = make_budgets(fake, table={"heavy": LabelLimit(10)}, rng=TopJitter())  # light: none
    with capture_logs() as logs:
        budgets.on_response("light", 429, {})
    [entry] = named(logs, "zoom_rate_limited")
    assert entry["rate"] is None and entry["pause"] == pytest.approx(1.0)
    fake.advance(3.0)
    budgets.on_response("light", 200, {})  # recovers the backoff; there is no rate to win back
    snap = budgets.snapshot()["light"]
    assert (snap["configured_rate"], snap["current_rate"]) == (None, None)
    budgets.on_response("light", 429, {})
    assert paused_for(budgets, fake, "light") == pytest.approx(1.0)  # attempt 0 again
