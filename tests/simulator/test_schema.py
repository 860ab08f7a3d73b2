"""Every endpoint's answers validate against Zoom's own OpenAPI (the 200 schemas)."""

from __future__ import annotations

from typing import Any

import aiohttp
import jsonschema
import pytest

from archiver.simulator import Simulator, SimulatorConfig

from .conftest import Zoom, assert_matches_schema, truth_by_session

SESSIONS = "/phone/sms/sessions"
DETAILS = "/phone/sms/sessions/{sessionId}"
SYNC = "/phone/sms/sessions/{sessionId}/sync"
MESSAGE = "/phone/sms/sessions/{sessionId}/messages/{messageId}"


def test_the_schemas_are_strict_enough_to_fail() -> None:
    bad_type: dict[str, Any] = {"sms_histories": [{"message_type": 7}]}
    too_many: dict[str, Any] = {"sms_histories": [{}] * 251}
    for value in (bad_type, too_many, {"sync_token": 5}):
        with pytest.raises(jsonschema.ValidationError):
            assert_matches_schema(SYNC, value)


def month_of(date_time: str) -> dict[str, str]:
    """From the first of that month to that day: always inside Zoom's one-month limit."""
    return {"from": date_time[:8] + "01", "to": date_time[:10]}


async def test_every_endpoint_validates(http: aiohttp.ClientSession) -> None:
    # The default account: big sessions give full 250-message pages.
    async with Simulator(SimulatorConfig(attachment_probability=0.4, busy_fraction=0.3)) as sim:
        zoom = Zoom(sim, http)
        sessions = truth_by_session(sim)
        newest = max(line["record"]["date_time"] for lines in sessions.values() for line in lines)
        token = None
        listed = 0
        while token != "":
            answer = await zoom.get(
                "/phone/sms/sessions",
                session_type="all",
                page_size=3,
                next_page_token=token,
                **month_of(newest),
            )
            assert answer.status == 200
            assert_matches_schema(SESSIONS, answer.json())
            listed += len(answer.json()["sms_sessions"])
            token = answer.json()["next_page_token"]
        assert listed > 0
        full_pages = 0
        for session_id, lines in sessions.items():
            for quirky in (False, True):
                sim.set_switches(quirk_duplicate=quirky, quirk_overlap=quirky)
                answer = await zoom.sync(session_id, "FSync", 250)
                assert_matches_schema(SYNC, answer.json())
                full_pages += len(answer.json()["sms_histories"]) == 250
                sync_token = answer.json()["sync_token"]
                for sync_type in ("BSync", "ISync"):
                    answer = await zoom.sync(session_id, sync_type, 250, sync_token=sync_token)
                    assert answer.status == 200
                    assert_matches_schema(SYNC, answer.json())
            details = await zoom.get(
                f"/phone/sms/sessions/{session_id}",
                page_size=100,
                **month_of(lines[-1]["record"]["date_time"]),
            )
            assert details.status == 200
            assert_matches_schema(DETAILS, details.json())
            for line in lines[-5:]:
                answer = await zoom.get(
                    f"/phone/sms/sessions/{session_id}/messages/{line['message_id']}"
                )
                assert_matches_schema(MESSAGE, answer.json())
        assert full_pages > 0
