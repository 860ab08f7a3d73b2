"""The one error policy, one row per case Zoom documents (zoom/README.md) or a gateway sends."""

from __future__ import annotations

import pytest

from archiver.errors import (
    SessionGoneError,
    SyncTokenInvalid,
    ZoomAuthError,
    ZoomError,
    ZoomRateLimited,
    ZoomResponseError,
    ZoomSessionError,
    ZoomTransientError,
)
from archiver.zoom.policy import (
    REPEATING,
    TOKEN,
    Action,
    BodyKind,
    action_of,
    body_kind,
    decide,
    error_for,
)
from archiver.zoom.ratelimit import BudgetExhausted

JSON, HTML, EMPTY, OTHER = BodyKind.JSON, BodyKind.HTML, BodyKind.EMPTY, BodyKind.OTHER

# (endpoint, status, code, body kind) -> action; `None` status: no answer (reset, timeout,
# truncated body).
TABLE = [
    # --- what Zoom documents ---------------------------------------------------------------
    ("sync", 200, None, JSON, Action.ACCEPT),
    ("sync", 401, 124, JSON, Action.RENEW_TOKEN),  # "Invalid access token." / "...expired."
    ("get_message", 401, 124, JSON, Action.RENEW_TOKEN),
    ("list_sessions", 401, 124, JSON, Action.RENEW_TOKEN),
    ("sync", 400, 300, JSON, Action.RESYNC),  # sync token invalid or expired
    ("sync", 404, 300, JSON, Action.RESYNC),
    ("sync", 400, 7035, JSON, Action.RESYNC),  # more new records than `count`
    ("sync", 404, 12004, JSON, Action.SESSION_GONE),  # "Session does not exist"
    ("get_message", 404, 12004, JSON, Action.SESSION_GONE),
    ("session_details", 404, 12004, JSON, Action.SESSION_GONE),
    ("list_sessions", 404, 12004, JSON, Action.SESSION_FAILURE),  # no session to be gone
    ("sync", 400, 4700, JSON, Action.SESSION_FAILURE),  # missing scope: not account-fatal
    ("sync", 403, 4711, JSON, Action.SESSION_FAILURE),
    ("list_sessions", 400, 4711, JSON, Action.SESSION_FAILURE),
    ("sync", 401, 4711, JSON, Action.RENEW_TOKEN),  # a 401 on an API call is always "renew"
    ("sync", 429, 429, JSON, Action.PARK),  # per-second limit
    ("sync", 429, 429, JSON, Action.PARK),  # daily limit (same status; the budget tells apart)
    ("list_sessions", 429, None, EMPTY, Action.PARK),
    ("get_message", 429, None, HTML, Action.PARK),
    ("get_message", 400, 300, JSON, Action.SESSION_FAILURE),  # 300 means a sync cursor only
    ("list_sessions", 400, 300, JSON, Action.SESSION_FAILURE),  # a bad next_page_token
    # --- gateways and the network -----------------------------------------------------------
    ("sync", 404, None, HTML, Action.SESSION_FAILURE),  # an HTML 404: says nothing
    ("sync", 404, None, JSON, Action.SESSION_FAILURE),  # a JSON 404 without 12004
    ("sync", 404, 1001, JSON, Action.SESSION_FAILURE),
    ("sync", 404, None, EMPTY, Action.SESSION_FAILURE),
    ("get_message", 404, None, HTML, Action.SESSION_FAILURE),
    ("list_sessions", 404, None, HTML, Action.SESSION_FAILURE),
    ("sync", 403, None, HTML, Action.SESSION_FAILURE),  # a WAF's page
    ("sync", 403, 200, JSON, Action.SESSION_FAILURE),  # a JSON 403 with a code
    ("get_message", 403, None, JSON, Action.SESSION_FAILURE),
    ("list_sessions", 403, None, HTML, Action.SESSION_FAILURE),
    ("sync", 401, None, HTML, Action.RENEW_TOKEN),
    ("sync", 400, None, JSON, Action.SESSION_FAILURE),
    ("sync", 409, None, OTHER, Action.SESSION_FAILURE),
    ("sync", 502, None, HTML, Action.RETRY),  # a gateway's HTML 502
    ("sync", 503, None, JSON, Action.RETRY),
    ("list_sessions", 500, None, EMPTY, Action.RETRY),
    ("get_message", 504, None, HTML, Action.RETRY),
    ("sync", 408, None, EMPTY, Action.RETRY),
    ("sync", 425, None, EMPTY, Action.RETRY),
    ("sync", None, None, EMPTY, Action.RETRY),  # reset, timeout, truncated body
    ("sync", 200, None, HTML, Action.BAD_RESPONSE),  # a login page served as 200
    ("sync", 200, None, EMPTY, Action.BAD_RESPONSE),
    ("list_sessions", 200, None, OTHER, Action.BAD_RESPONSE),
    # --- the OAuth token endpoint -------------------------------------------------------
    (TOKEN, 200, None, JSON, Action.ACCEPT),
    (TOKEN, 401, None, JSON, Action.ACCOUNT_FATAL),  # invalid_client
    (TOKEN, 400, None, JSON, Action.ACCOUNT_FATAL),  # invalid_client: wrong account id
    (TOKEN, 403, None, JSON, Action.ACCOUNT_FATAL),
    (TOKEN, 401, None, HTML, Action.RETRY),  # a proxy's page is not Zoom refusing us
    (TOKEN, 401, None, EMPTY, Action.RETRY),
    (TOKEN, 500, None, JSON, Action.RETRY),
    (TOKEN, 502, None, HTML, Action.RETRY),
    (TOKEN, 503, None, EMPTY, Action.RETRY),
    (TOKEN, 429, None, JSON, Action.RETRY),  # no budget paces the token endpoint
    (TOKEN, 408, None, EMPTY, Action.RETRY),
    (TOKEN, None, None, EMPTY, Action.RETRY),
    (TOKEN, 200, None, HTML, Action.RETRY),  # a 200 that is no token is a broken answer
    (TOKEN, 200, None, OTHER, Action.RETRY),
]


@pytest.mark.parametrize(("endpoint", "status", "code", "kind", "expected"), TABLE)
def test_decide(
    endpoint: str, status: int | None, code: int | None, kind: BodyKind, expected: Action
) -> None:
    assert decide(endpoint, status, code, kind) is expected


def test_only_the_token_endpoint_is_ever_account_fatal() -> None:
    statuses = [None, *range(200, 600)]
    for endpoint in ("sync", "get_message", "list_sessions", "session_details"):
        for status in statuses:
            for code in (None, 124, 300, 4700, 4711, 7035, 12004):
                for kind in BodyKind:
                    assert decide(endpoint, status, code, kind) is not Action.ACCOUNT_FATAL


def test_only_code_12004_makes_a_session_gone() -> None:
    for status in [None, *range(200, 600)]:
        for code in (None, 124, 300, 404, 1001, 4700, 7035):
            for kind in BodyKind:
                assert decide("sync", status, code, kind) is not Action.SESSION_GONE


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"code": 124}', JSON),
        (b"  \n[1, 2]", JSON),
        (b"<!DOCTYPE html><title>404</title>", HTML),
        (b"\r\n <html>", HTML),
        (b"", EMPTY),
        (b" \n\t", EMPTY),
        (b"Bad Gateway", OTHER),
        (b"42", OTHER),
    ],
)
def test_body_kind(raw: bytes, kind: BodyKind) -> None:
    assert body_kind(raw) is kind


ERRORS = [
    (Action.SESSION_GONE, SessionGoneError),
    (Action.RESYNC, SyncTokenInvalid),
    (Action.ACCOUNT_FATAL, ZoomAuthError),
    (Action.BAD_RESPONSE, ZoomResponseError),
    (Action.PARK, ZoomRateLimited),
    (Action.RENEW_TOKEN, ZoomTransientError),
    (Action.RETRY, ZoomTransientError),
    (Action.SESSION_FAILURE, ZoomSessionError),
]


@pytest.mark.parametrize(("action", "error"), ERRORS)
def test_error_for_each_action(action: Action, error: type[ZoomError]) -> None:
    exc = error_for(
        action,
        status=403,
        code=4711,
        message="Invalid access token, does not contain scopes",
        endpoint="GET /phone/sms/sessions/{sessionId}/sync",
        session_id="s1",
    )
    assert type(exc) is error
    assert (exc.status, exc.code, exc.session_id) == (403, 4711, "s1")
    # Read back, the error names its action, except "renew" (spent: just try again later).
    expected = Action.RETRY if action is Action.RENEW_TOKEN else action
    assert action_of(exc) is expected


def test_a_session_error_is_never_auth_or_gone() -> None:
    exc = error_for(
        Action.SESSION_FAILURE,
        status=404,
        code=None,
        message=None,
        endpoint="GET /phone/sms/sessions/{sessionId}/sync",
        session_id="s1",
        kind=HTML,
    )
    assert not isinstance(exc, ZoomAuthError | SessionGoneError)
    assert "an HTML page" in str(exc)


def test_scope_codes_name_the_scopes() -> None:
    exc = error_for(
        Action.SESSION_FAILURE,
        status=400,
        code=4700,
        message="no scope",
        endpoint="GET /phone/sms/sessions",
        session_id=None,
    )
    assert "phone:read:admin" in str(exc)


def test_budget_exhausted_parks() -> None:
    assert action_of(BudgetExhausted("heavy", 1e9, 3600.0, "daily_cap")) is Action.PARK


def test_repeating_actions_are_the_ones_the_client_loops_on() -> None:
    assert {Action.RETRY, Action.RENEW_TOKEN, Action.PARK} == REPEATING
