"""SimulatorConfig: defaults, validation naming the key, run-time switches."""

from __future__ import annotations

from typing import Any

import pytest

from archiver.errors import ConfigError
from archiver.simulator import SimulatorConfig
from archiver.simulator.config import anchor_ms


def test_defaults_are_the_documented_ones() -> None:
    config = SimulatorConfig()
    assert (config.host, config.port, config.file_port, config.seed) == ("127.0.0.1", 0, 0, 1)
    assert (config.sessions, config.account_id, config.client_id) == (
        20,
        "sim-account",
        "sim-client",
    )
    assert (config.token_lifetime, config.jwt_lifetime) == (3600.0, 172800.0)
    assert config.labels == dict.fromkeys(
        ("list_sessions", "sync", "get_message", "session_details"), "medium"
    )
    assert not config.rate_limits
    assert config.header_style == "full"


def test_partial_labels_are_completed_with_medium() -> None:
    config = SimulatorConfig(labels={"sync": "heavy"})
    assert config.labels["sync"] == "heavy"
    assert config.labels["get_message"] == "medium"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"plan": "enterprise"}, "plan"),
        ({"header_style": "rfc"}, "header_style"),
        ({"labels": {"sync": "extreme"}}, "labels.sync"),
        ({"labels": {"downloads": "light"}}, "labels.downloads"),
        ({"fault_5xx": 1.5}, "fault_5xx"),
        ({"fault_5xx": 0.6, "fault_reset": 0.6}, "fault_5xx"),
        ({"short_page_probability": 1.1}, "short_page_probability"),
        ({"no_token_probability": -0.5}, "no_token_probability"),
        ({"html_404_probability": 2.0}, "html_404_probability"),
        ({"forbidden_probability": -1.0}, "forbidden_probability"),
        ({"html_404_probability": 0.5, "forbidden_probability": 0.6}, "html_404_probability"),
        ({"attachment_probability": -0.1}, "attachment_probability"),
        ({"sessions": -1}, "sessions"),
        ({"token_lifetime": 0}, "token_lifetime"),
        ({"token_expiry": 0}, "token_expiry"),
        ({"max_messages": 0}, "max_messages"),
        ({"daily_cap": -5}, "daily_cap"),
        ({"jwt_secret": "short"}, "jwt_secret"),
        ({"jwt_lifetime": float("inf")}, "jwt_lifetime"),
        ({"anchor": "2025-13-01T00:00:00Z"}, "anchor"),
        ({"fault_slow": "0.5"}, "fault_slow"),
        ({"rate_limits": 1}, "rate_limits"),
        ({"sessions": True}, "sessions"),
    ],
)
def test_bad_values_name_their_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SimulatorConfig(**changes)
    assert caught.value.key == key


def test_integers_are_accepted_where_seconds_go() -> None:
    config = SimulatorConfig(slow_seconds=3, token_expiry=5)
    assert config.slow_seconds == 3.0 and isinstance(config.slow_seconds, float)
    assert config.token_expiry == 5.0 and isinstance(config.token_expiry, float)


def test_negative_jwt_lifetime_is_allowed_for_expired_urls() -> None:
    assert SimulatorConfig(jwt_lifetime=-60).jwt_lifetime == -60.0


def test_with_switches_changes_switches_but_refuses_data_knobs() -> None:
    config = SimulatorConfig()
    changed = config.with_switches(quirk_overlap=True, fault_5xx=0.1, labels={"sync": "heavy"})
    assert changed.quirk_overlap and changed.fault_5xx == 0.1
    assert changed.labels["sync"] == "heavy" and changed.labels["list_sessions"] == "medium"
    with pytest.raises(ConfigError) as caught:
        config.with_switches(seed=2)
    assert caught.value.key == "seed"
    with pytest.raises(ConfigError) as caught:
        config.with_switches(no_such_switch=True)
    assert caught.value.key == "no_such_switch"


def test_switches_lists_run_time_knobs_only() -> None:
    switches = SimulatorConfig().switches()
    assert switches["quirk_duplicate"] is False
    assert switches["labels"]["sync"] == "medium"
    assert "seed" not in switches and "client_secret" not in switches


def test_anchor_now_is_todays_utc_midnight() -> None:
    assert anchor_ms("now", now=1_700_000_123.0) == 1_699_920_000_000
    assert anchor_ms("2025-06-01T00:00:00Z") == 1_748_736_000_000
