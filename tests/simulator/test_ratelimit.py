"""Rate limits: the sliding window and daily cap as tables, then 429s over real sockets."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from archiver.simulator.ratelimit import RateLimiter, Verdict, rate_headers

from .conftest import Answer, Zoom, running, truth_by_session

QPS_BODY = {
    "code": 429,
    "message": "You have reached the maximum per-second rate limit for this API. Try again later.",
}
DAILY_BODY = {
    "code": 429,
    "message": "You have reached the maximum daily rate limit for this API. Refer to the "
    "response header for details on when you can make another request.",
}
NOON = 1_750_000_000.0 - 1_750_000_000.0 % 86_400 + 43_200  # some UTC day, 12:00


def test_sliding_window_admits_exactly_the_limit_in_any_second() -> None:
    limiter = RateLimiter()
    verdicts = [limiter.check("medium", "pro", None, 100.0, NOON) for _ in range(11)]
    assert [v.allowed for v in verdicts] == [True] * 10 + [False]
    assert [v.remaining for v in verdicts[:10]] == list(range(9, -1, -1))
    assert verdicts[10] == Verdict("medium", False, "QPS", 10, 0, 1.0)
    assert not limiter.check("medium", "pro", None, 100.999, NOON).allowed
    assert limiter.check("medium", "pro", None, 101.0, NOON).allowed
    # Labels are separate budgets; Business doubles them.
    assert limiter.check("light", "pro", None, 101.0, NOON).limit == 20
    assert limiter.check("heavy", "business", None, 101.0, NOON).limit == 10


def test_refused_requests_do_not_use_the_budget() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        assert limiter.check("heavy", "pro", None, 0.0, NOON).allowed
    for _ in range(50):
        assert not limiter.check("heavy", "pro", None, 0.5, NOON).allowed
    assert sum(limiter.check("heavy", "pro", None, 1.0, NOON).allowed for _ in range(6)) == 5


def test_heavy_daily_cap_resets_at_utc_midnight() -> None:
    limiter = RateLimiter()
    assert all(limiter.check("heavy", "pro", 3, float(t), NOON + t).allowed for t in range(3))
    refused = limiter.check("heavy", "pro", 3, 10.0, NOON + 10)
    assert (refused.allowed, refused.limit_type, refused.limit) == (False, "Daily-limit", 3)
    assert refused.retry_after == pytest.approx(43_200 - 10)
    assert limiter.check("medium", "pro", 3, 10.0, NOON + 10).allowed  # not a Heavy call
    assert limiter.check("heavy", "pro", 3, 20.0, NOON + 43_200).allowed
    assert RateLimiter().check("heavy", "business", None, 0.0, NOON).limit == 10


@pytest.mark.parametrize(
    ("style", "verdict", "headers"),
    [
        (
            "full",
            Verdict("medium", True, "QPS", 10, 7, 0.0),
            {
                "X-RateLimit-Category": "Medium",
                "X-RateLimit-Limit": "10",
                "X-RateLimit-Remaining": "7",
            },
        ),
        (
            "full",
            Verdict("heavy", False, "QPS", 5, 0, 0.25),
            {
                "X-RateLimit-Category": "Heavy",
                "X-RateLimit-Type": "QPS",
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "Retry-After": "1",
            },
        ),
        ("iso", Verdict("medium", True, "QPS", 10, 7, 0.0), {}),
        (
            "iso",
            Verdict("heavy", False, "Daily-limit", 3, 0, 43_200.0),
            {"X-RateLimit-Type": "Daily-limit", "Retry-After": "2025-06-16T00:00:00Z"},
        ),
        ("none", Verdict("heavy", False, "QPS", 5, 0, 0.5), {}),
    ],
)
def test_header_styles(style: str, verdict: Verdict, headers: dict[str, str]) -> None:
    assert rate_headers(style, verdict, NOON) == headers


async def burst(zoom: Zoom, path: str, n: int, **params: object) -> list[Answer]:
    await zoom.login()
    return list(await asyncio.gather(*(zoom.get(path, **params) for _ in range(n))))


LIST = "/phone/sms/sessions"


async def test_per_second_429_with_full_headers(http: aiohttp.ClientSession) -> None:
    async with running(rate_limits=True, plan="pro") as sim:
        answers = await burst(Zoom(sim, http), LIST, 15)
        ok = [a for a in answers if a.status == 200]
        limited = [a for a in answers if a.status == 429]
        assert (len(ok), len(limited)) == (10, 5)
        assert all(a.json() == QPS_BODY for a in limited)
        assert {a.headers["X-RateLimit-Category"] for a in answers} == {"Medium"}
        assert sorted(int(a.headers["X-RateLimit-Remaining"]) for a in ok) == list(range(10))
        for answer in limited:
            assert answer.headers["X-RateLimit-Type"] == "QPS"
            assert answer.headers["X-RateLimit-Limit"] == "10"
            assert answer.headers["Retry-After"] == "1"
        stats = sim.stats()
        assert stats["by_label"]["medium"] == {"requests": 15, "rate_limited": 5}
        assert stats["by_endpoint"]["list_sessions"] == {"requests": 15, "rate_limited": 5}
        # A second later the budget is back.
        await asyncio.sleep(1.05)
        assert (await Zoom(sim, http).get(LIST)).status == 200


async def test_iso_and_no_header_styles(http: aiohttp.ClientSession) -> None:
    async with running(rate_limits=True, plan="pro", header_style="iso") as sim:
        answers = await burst(Zoom(sim, http), LIST, 12)
        limited = [a for a in answers if a.status == 429]
        assert len(limited) == 2
        for answer in limited:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", answer.headers["Retry-After"])
            assert answer.headers["X-RateLimit-Type"] == "QPS"
            assert "X-RateLimit-Category" not in answer.headers
        sim.set_switches(header_style="none")
        await asyncio.sleep(1.05)
        answers = await burst(Zoom(sim, http), LIST, 12)
        assert sum(a.status == 429 for a in answers) == 2
        for answer in answers:
            assert not any(
                h.lower().startswith(("x-ratelimit", "retry-after")) for h in answer.headers
            )


async def test_heavy_daily_cap(http: aiohttp.ClientSession) -> None:
    async with running(rate_limits=True, labels={"sync": "heavy"}, daily_cap=3) as sim:
        zoom = Zoom(sim, http)
        session_id = next(iter(truth_by_session(sim)))
        statuses = []
        for _ in range(5):
            answer = await zoom.sync(session_id, "FSync", 5)
            statuses.append(answer.status)
            await asyncio.sleep(0.11)  # stay under the Heavy 10/s of Business
        assert statuses == [200, 200, 200, 429, 429]
        assert answer.json() == DAILY_BODY
        assert answer.headers["X-RateLimit-Type"] == "Daily-limit"
        assert answer.headers["X-RateLimit-Category"] == "Heavy"
        assert 0 < int(answer.headers["Retry-After"]) <= 86_400
        assert (await zoom.get(LIST)).status == 200  # Medium is not capped
        assert sim.stats()["by_label"]["heavy"] == {"requests": 5, "rate_limited": 2}


async def test_limits_off_by_default(zoom: Zoom) -> None:
    answers = await burst(zoom, LIST, 60)
    assert {a.status for a in answers} == {200}
    assert not any("X-RateLimit-Category" in a.headers for a in answers)
