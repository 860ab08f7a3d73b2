"""The model itself: its documented rules, table-tested, and proof that a plain walker that
trusts nothing but an empty BSync page gets every message from it whatever it does.

If the model could hide a message from a correct client, the model test would blame the
archiver for the model's own bug; `test_a_plain_walker_gets_everything` rules that out.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.model.behaviour import Behaviour, Disconnected, Faults
from tests.model.scenario import FOCUS, make_case
from tests.model.zoom_model import HISTORY_START, LIST_PATH, ZoomModel

SYNC = "/phone/sms/sessions/{}/sync"


def _model(behaviour: Behaviour | None = None, messages: int = 0, seed: int = 7) -> ZoomModel:
    model = ZoomModel(seed, behaviour or Behaviour())
    model.populate(1, messages)
    return model


def _call(model: ZoomModel, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
    status, _, raw = model.handle(path, {k: str(v) for k, v in params.items()}, _token(model))
    return status, json.loads(raw)


def _token(model: ZoomModel) -> str:
    return model.issue_access_token()


def _sid(model: ZoomModel) -> str:
    return next(iter(model.sessions))


def _ids(body: dict[str, Any]) -> list[str]:
    return [m["message_id"] for m in body.get("sms_histories", [])]


def _times(model: ZoomModel) -> list[str]:
    return [m.message_id for m in model.sessions[_sid(model)].messages]


# --- the sync model of zoom/README.md -------------------------------------------------------


def test_fsync_newest_first_then_bsync_back_to_an_empty_page() -> None:
    model = _model(messages=5)
    order = _times(model)
    status, first = _call(model, SYNC.format(_sid(model)), sync_type="FSync", count=2)
    assert status == 200 and _ids(first) == order[:-3:-1]
    _, second = _call(
        model, SYNC.format(_sid(model)), sync_type="BSync", count=2, sync_token=first["sync_token"]
    )
    assert _ids(second) == order[-3:-5:-1]
    _, third = _call(
        model, SYNC.format(_sid(model)), sync_type="BSync", count=2, sync_token=second["sync_token"]
    )
    _, last = _call(
        model, SYNC.format(_sid(model)), sync_type="BSync", count=2, sync_token=third["sync_token"]
    )
    assert _ids(third) == order[:1] and _ids(last) == []


def test_the_token_decodes_to_a_window() -> None:
    model = _model(messages=3)
    _, page = _call(model, SYNC.format(_sid(model)), sync_type="FSync", count=5)
    ident, older, newer = base64.b64decode(page["sync_token"]).decode().rsplit("_", 2)
    assert ident.startswith(_sid(model)) and int(older) <= int(newer)


@pytest.mark.parametrize(
    ("new", "count", "boundary", "expect_status", "expect_new_on_page"),
    [
        (2, 2, 0.0, 200, 2),  # exactly count new: one full page
        (3, 2, 0.0, 400, 0),  # more than count: 7035
        (2, 2, 1.0, 200, 1),  # the boundary takes a slot: the newest waits for the next call
        (1, 1, 1.0, 200, 0),  # count 1: the boundary alone fills the page
        (0, 3, 1.0, 200, 0),  # nothing new: the boundary alone
    ],
)
def test_isync(
    new: int, count: int, boundary: float, expect_status: int, expect_new_on_page: int
) -> None:
    model = _model(Behaviour(boundary=boundary), messages=3)
    path = SYNC.format(_sid(model))
    _, top = _call(model, path, sync_type="FSync", count=5)
    model.burst(new, one_session=True)
    status, page = _call(model, path, sync_type="ISync", count=count, sync_token=top["sync_token"])
    assert status == expect_status
    if status != 200:
        assert page["code"] == 7035
        return
    fresh = [mid for mid in _ids(page) if mid not in _ids(top)]
    assert len(fresh) == expect_new_on_page
    assert len(_ids(page)) <= count
    assert (_ids(top)[0] in _ids(page)) == (boundary == 1.0)


@pytest.mark.parametrize(("wait", "accepted"), [(0, True), (9, True), (10, False), (50, False)])
def test_a_token_is_refused_lifetime_ticks_after_issue(wait: int, accepted: bool) -> None:
    model = _model(Behaviour(token_lifetime=10), messages=4)
    path = SYNC.format(_sid(model))
    _, top = _call(model, path, sync_type="FSync", count=2)
    model.advance(wait)  # the next request is one more tick
    status, body = _call(model, path, sync_type="BSync", count=2, sync_token=top["sync_token"])
    assert (status == 200) == accepted
    if not accepted:
        assert status in (400, 404) and body["code"] == 300


def test_a_short_page_leaves_older_messages_and_only_an_empty_page_ends() -> None:
    model = _model(Behaviour(short_page=1.0), messages=12)
    path = SYNC.format(_sid(model))
    status, page = _call(model, path, sync_type="FSync", count=5)
    got = _ids(page)
    assert status == 200 and 1 <= len(got) < 5
    while _ids(page):
        _, page = _call(model, path, sync_type="BSync", count=5, sync_token=page["sync_token"])
        got += _ids(page)
    assert sorted(got) == sorted(_times(model))


def test_a_deleted_session_answers_12004_and_leaves_the_list() -> None:
    model = _model(messages=2)
    model.delete_session()
    status, body = _call(model, SYNC.format(_sid(model)), sync_type="FSync", count=2)
    assert (status, body["code"]) == (404, 12004)
    assert _list_all(model) == set()


def test_a_revoked_access_token_is_refused_until_renewed() -> None:
    model = _model(Behaviour(faults=Faults(unauthorized=1.0)), messages=1)
    old = _token(model)
    status, _, raw = model.handle(LIST_PATH, _window(HISTORY_START), old)
    assert (status, json.loads(raw)["code"]) == (401, 124)
    status, _, _ = model.handle(LIST_PATH, _window(HISTORY_START), old)
    assert status == 401  # still the revoked token
    assert _token(model) != old


@pytest.mark.parametrize(
    ("params", "violation"),
    [
        ({"sync_type": "FSync", "count": "0"}, "count 0"),
        ({"sync_type": "FSync", "count": "251"}, "count 251"),
        ({"sync_type": "ISync", "count": "5"}, "without sync_token"),
        ({"sync_type": "Sync", "count": "5"}, "sync_type"),
    ],
)
def test_requests_outside_the_documented_rules_are_recorded(
    params: dict[str, str], violation: str
) -> None:
    model = _model(messages=1)
    status, _, _ = model.handle(SYNC.format(_sid(model)), params, _token(model))
    assert status == 400 and violation in model.violations[0]


def test_a_list_window_over_a_month_is_recorded() -> None:
    model = _model(messages=1)
    params = {"from": "2025-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z", "page_size": "30"}
    status, _, _ = model.handle(LIST_PATH, params, _token(model))
    assert status == 400 and "over a month" in model.violations[0]


# --- a plain walker gets everything -----------------------------------------------------------


def _window(start: datetime) -> dict[str, str]:
    end = start + timedelta(days=28)
    return {
        "from": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "to": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "page_size": "100",
        "session_type": "all",
    }


def _retrying(model: ZoomModel, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """200, or Zoom's 300/7035/12004; anything else (gateway pages, 5xx, 401, 429) again."""
    for _ in range(500):
        try:
            status, _, raw = model.handle(path, params, _token(model))
        except Disconnected:
            continue
        try:
            body = json.loads(raw)
        except ValueError:
            continue  # an HTML page from a gateway
        if status == 200 or body.get("code") in (300, 7035, 12004):
            return status, body
        if status == 401:
            model.issue_access_token()
    raise AssertionError(f"{path}: no answer in 500 tries")


def _list_all(model: ZoomModel) -> set[str]:
    found: set[str] = set()
    start = HISTORY_START
    while start <= model.now() + timedelta(days=1):
        params = _window(start)
        while True:
            _, body = _retrying(model, LIST_PATH, params)
            found |= {s["session_id"] for s in body["sms_sessions"]}
            if not body["next_page_token"]:
                break
            params = {**params, "next_page_token": body["next_page_token"]}
        start += timedelta(days=28, seconds=1)
    return found


def _walk(model: ZoomModel, session_id: str, count: int) -> set[str]:
    """FSync, then BSync until an empty page; a page without token is asked again, a refused
    token starts over from FSync. Everything seen is kept."""
    got: set[str] = set()
    path = SYNC.format(session_id)
    token: str | None = None
    while True:
        params = {"sync_type": "BSync" if token else "FSync", "count": str(count)}
        if token:
            params["sync_token"] = token
        status, body = _retrying(model, path, params)
        if status != 200:
            if body["code"] == 12004:
                return got
            token = None  # 300: start over
            continue
        got |= set(_ids(body))
        if token and not _ids(body):
            return got
        token = body.get("sync_token") or token


@pytest.mark.parametrize("seed", range(40))
def test_a_plain_walker_gets_everything(seed: int) -> None:
    case = make_case(seed)
    # Every behaviour at once, except messages arriving while it walks (the truth would move).
    behaviour = dataclasses.replace(
        case.behaviour,
        short_page=0.5,
        overlap=0.5,
        duplicate=0.3,
        no_token=0.15,
        no_token_empty=0.5,
        order="mixed",
        live_arrivals=0.0,
        visible_lag=0,  # the truth below is what Zoom shows
    )
    model = ZoomModel(seed, behaviour)
    model.populate(case.sessions, case.messages)
    model.burst(case.count + 1, one_session=True)
    got: set[tuple[str, str]] = set()
    for session_id in _list_all(model):
        got |= {(session_id, mid) for mid in _walk(model, session_id, case.count)}
    assert got == set(model.truth(include_deleted=True))
    assert not model.violations


def test_the_cases_cover_every_behaviour_and_step() -> None:
    """Over the 200 cases of `make test`: every knob on somewhere, every step kind taken."""
    cases = [make_case(seed) for seed in range(200)]
    knobs: Counter[str] = Counter()
    for case in cases:
        b = case.behaviour
        knobs.update(name for name, _ in b.faults.kinds())
        knobs.update(
            name
            for name in (
                "short_page",
                "boundary",
                "overlap",
                "duplicate",
                "no_token",
                "no_token_empty",
                "short_isync",
                "clock_skew",
                "visible_lag",
            )
            if getattr(b, name) != 0
        )
        knobs.update(["offset_paging"] if b.offset_paging else [])
        knobs.update(["token_lifetime"] if b.token_lifetime is not None else [])
        knobs.update(["live_arrivals"] if b.live_arrivals > 0 else [])
        knobs.update([f"order={b.order}"])
        knobs.update(name for name, arg in case.steps if name != "pass" or not arg)
        knobs.update("stopped pass" for name, arg in case.steps if name == "pass" and arg)
    wanted = {name.removeprefix("faults.") for name, _ in FOCUS} - {"order"}
    wanted |= {"order=asc", "order=mixed", "order=desc", "burst", "burst_one", "advance"}
    wanted |= {"drop_state", "delete", "stopped pass"}
    assert wanted <= set(knobs), wanted - set(knobs)
    assert all(knobs[name] >= 5 for name in wanted), knobs
