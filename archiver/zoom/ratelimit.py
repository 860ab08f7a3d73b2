"""Shared rate budgets: one per Zoom rate-limit label, sized from the plan and our share.

Zoom's limits are account-wide and shared with every app on the account, so one `Budgets` per
process paces every task (invariant 6: never more than our share). Each API call does
`await budgets.acquire(label)` before the request, `budgets.on_response(...)` after. Per label:
- a sliding-window throttler (asyncio-throttle's log) admits at most floor(rate) requests in
  any 1.02 s, paced evenly so the window never opens with a burst;
- a 429 pauses that label only (Retry-After in any form, else full-jitter backoff) and cuts its
  rate (x0.7); 429-free time wins it back slowly (+1 % of the ceiling per second): AIMD, the
  same loop TCP uses, because we cannot see what the other apps on the account are sending;
- Heavy also has a daily cap (15,000/30,000 x share) counted per UTC day; when it is spent, or
  Zoom says `X-RateLimit-Type: Daily-limit`, the label pauses until UTC midnight.

A pause longer than `max_wait` raises `BudgetExhausted` instead of holding the caller's task
for hours, so a daily-capped Heavy never ties up workers that Light and Medium could use.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import structlog

from archiver.config import ENDPOINTS, LABELS, RateLimitConfig
from archiver.errors import ZoomRateLimited
from archiver.zoom.pacing import Clock, Sleep, Window
from archiver.zoom.retry_after import (
    backoff_delay,
    header_value,
    is_daily_limit,
    next_utc_midnight,
    parse_retry_after,
    utc_day,
)

__all__ = [
    "DEFAULT_LABELS",
    "PHONE_RATE_TABLE",
    "BudgetExhausted",
    "Budgets",
    "LabelLimit",
    "backoff_delay",
    "label_limit",
]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LabelLimit:
    """One row of Zoom's table: requests per second, and per UTC day where capped."""

    per_second: float
    per_day: int | None = None


# zoom/README.md "Rate limits". The daily cap is shared by Heavy and Resource-intensive; we
# make no Resource-intensive calls, so Heavy may use all of it. "unlimited" has no rows: the
# simulator with its limits off, for benchmarks.
_PRO = {"light": LabelLimit(20), "medium": LabelLimit(10), "heavy": LabelLimit(5, 15_000)}
_BUSINESS = {"light": LabelLimit(40), "medium": LabelLimit(20), "heavy": LabelLimit(10, 30_000)}
PHONE_RATE_TABLE: Final[Mapping[str, Mapping[str, LabelLimit]]] = MappingProxyType(
    {
        "pro": MappingProxyType(_PRO),
        "business": MappingProxyType(_BUSINESS),
        "unlimited": MappingProxyType({}),
    }
)

# Zoom's current spec labels every SMS path we call Medium (older docs said sync was Heavy).
DEFAULT_LABELS: Final[Mapping[str, str]] = MappingProxyType(dict.fromkeys(ENDPOINTS, "medium"))
FALLBACK_LABEL: Final = "medium"

DECREASE: Final = 0.7  # multiplicative decrease per (non-echo) 429
RECOVERY_PER_SECOND: Final = 0.01  # of the ceiling, per second of 429-free time
MIN_RATE: Final = 1.0  # requests/s the decrease stops at (lower only for tiny ceilings)
# 429s within this long of the one we reacted to are the same overshoot reported by requests
# already in flight: reacting to each would cut the rate to the floor after one burst.
ECHO_WINDOW: Final = 1.0
BACKOFF_BASE: Final = 1.0
BACKOFF_CAP: Final = 60.0
MAX_QPS_PAUSE: Final = 300.0  # a per-second limit never needs minutes; more is a bad header
DAILY_SLACK: Final = 60.0  # past UTC midnight: our clock and Zoom's may disagree a little
DEFAULT_MAX_WAIT: Final = 900.0  # pauses longer than this raise BudgetExhausted


def label_limit(plan: str, label: str) -> LabelLimit | None:
    """Zoom's limit for `label` on `plan`, or None when there is none (plan "unlimited")."""
    return PHONE_RATE_TABLE[plan].get(label)


class BudgetExhausted(ZoomRateLimited):
    """`acquire` would wait longer than `max_wait`: the label is paused (daily cap spent, a
    long Retry-After). Park the work and come back at `resume_at` (wall-clock epoch seconds)."""

    def __init__(self, label: str, resume_at: float, wait: float, reason: str) -> None:
        self.label = label
        self.resume_at = resume_at
        self.wait = wait
        self.reason = reason
        super().__init__(f"{label} rate budget paused ({reason}) for another {wait:.0f} s")


@dataclass(slots=True, eq=False)
class _Label:
    """The mutable state of one label's budget."""

    name: str
    ceiling: float  # requests/s: Zoom's rate x share; inf when unlimited
    window: Window | None  # None when unlimited
    daily_cap: int | None
    rate: float = 0.0  # now, after 429 decreases; never above ceiling
    min_rate: float = 0.0
    daily_used: int = 0
    day: int = -1
    paused_until: float = 0.0  # monotonic; 0.0 = never paused, which keeps acquire cheap
    pause_reason: str = ""
    attempt: int = 0  # backoff attempts since the last reset
    echo_until: float = -math.inf
    calm_since: float = 0.0  # 429-free since: recovery is measured from here
    requests: int = 0
    rate_limited: int = 0
    wait_total: float = 0.0

    def __post_init__(self) -> None:
        self.rate = self.ceiling
        self.min_rate = min(MIN_RATE, self.ceiling / 4)


def _new_label(
    name: str, limit: LabelLimit | None, share: float, clock: Clock, sleep: Sleep
) -> _Label:
    if limit is None:
        return _Label(name, math.inf, None, None)
    ceiling = limit.per_second * share
    daily = None if limit.per_day is None else max(1, math.floor(limit.per_day * share))
    return _Label(name, ceiling, Window(ceiling, clock=clock, sleep=sleep), daily)


class Budgets:
    """The process-wide rate budgets, one per label (see the module docstring)."""

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        table: Mapping[str, LabelLimit] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`table` replaces the plan's row of `PHONE_RATE_TABLE` (tests, benchmarks); `share`
        still applies. A label missing from it is unlimited."""
        limits = PHONE_RATE_TABLE[config.plan] if table is None else table
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not a secret
        self._labels = {
            name: _new_label(name, limits.get(name), config.share, clock, sleep) for name in LABELS
        }
        self._overrides = dict(config.labels)
        self._learned: dict[str, str] = {}

    # --- labels ------------------------------------------------------------------------------

    def label_for(self, endpoint: str) -> str:
        """The label whose budget `endpoint` draws from: the config's override, else what Zoom
        last said in `X-RateLimit-Category`, else the spec's default (Medium)."""
        return (
            self._overrides.get(endpoint)
            or self._learned.get(endpoint)
            or DEFAULT_LABELS.get(endpoint, FALLBACK_LABEL)
        )

    def learn_category(self, endpoint: str, category: str) -> bool:
        """Follow Zoom's `X-RateLimit-Category` for `endpoint`; True if its label changed.

        Unknown values (Resource-intensive, typos) are ignored. A config override still wins:
        it is the operator's explicit word (set, say, after Zoom mislabelled an endpoint), so
        Zoom's header is only recorded, and logged where the two disagree.
        """
        label = category.strip().lower()
        if label not in LABELS or self._learned.get(endpoint) == label:
            return False
        before = self.label_for(endpoint)
        self._learned[endpoint] = label
        after = self.label_for(endpoint)
        override = self._overrides.get(endpoint)
        if override is not None and override != label:
            _log.info("rate_category_overridden", endpoint=endpoint, zoom=label, config=override)
        else:
            _log.info("rate_category_learned", endpoint=endpoint, label=label, was=before)
        return after != before

    def endpoint_labels(self) -> dict[str, str]:
        """Every known endpoint and the label it draws from now (for `status`)."""
        return {e: self.label_for(e) for e in (*ENDPOINTS, *self._learned)}

    # --- the two calls around every request ------------------------------------------------

    async def acquire(self, label: str, *, max_wait: float = DEFAULT_MAX_WAIT) -> float:
        """Wait for a slot in `label`'s budget; returns the seconds waited.

        Raises `BudgetExhausted` instead of waiting when the label is paused for longer than
        `max_wait` (pass `math.inf` to wait regardless); other labels are unaffected.
        """
        state = self._labels[label]
        if state.window is None and state.daily_cap is None and not state.paused_until:
            state.requests += 1  # unlimited and never paused: nothing to wait for
            return 0.0
        clock = self._clock
        start = now = clock()
        while True:
            if state.paused_until > now:
                remaining = state.paused_until - now
                if remaining > max_wait:
                    resume_at = self._wall() + remaining
                    raise BudgetExhausted(label, resume_at, remaining, state.pause_reason)
                await self._sleep(remaining)
                now = clock()
                continue  # the pause may have been extended meanwhile
            if state.window is not None:
                await state.window.acquire()
                now = clock()
                if state.paused_until > now:  # a 429 arrived while we queued
                    continue
            # After the throttler, and with no await before the count: concurrent tasks
            # cannot all see room under the cap. A slot lost here only slows us down.
            if state.daily_cap is not None and not self._take_daily(state, now):
                continue
            break
        state.requests += 1
        waited = now - start
        state.wait_total += waited
        return waited

    def on_response(
        self,
        label: str,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
        *,
        endpoint: str | None = None,
    ) -> None:
        """Feed back every response. On 429: pause and slow down `label`. `body` lets the
        daily message be recognised without headers; `endpoint` enables category learning."""
        state = self._labels[label]
        if endpoint is not None and headers:
            category = header_value(headers, "X-RateLimit-Category")
            if category:
                self.learn_category(endpoint, category)
        if status == 429:
            self._on_429(state, headers or {}, body)
        elif state.rate < state.ceiling or state.attempt:
            self._recover(state, self._clock())

    # --- internals ---------------------------------------------------------------------------

    def _take_daily(self, state: _Label, now: float) -> bool:
        assert state.daily_cap is not None
        wall = self._wall()
        day = utc_day(wall)
        if day != state.day:
            state.day = day
            state.daily_used = 0
        if state.daily_used < state.daily_cap:
            state.daily_used += 1
            return True
        if self._pause(state, now, next_utc_midnight(wall) - wall, "daily_cap"):
            _log.warning("rate_daily_cap_reached", label=state.name, used=state.daily_used)
        return False

    def _on_429(self, state: _Label, headers: Mapping[str, str], body: str | bytes | None) -> None:
        now = self._clock()
        wall = self._wall()
        state.rate_limited += 1
        raw = header_value(headers, "Retry-After")
        delay = None if raw is None else parse_retry_after(raw, wall)
        if is_daily_limit(headers, body):
            # Cap a far-future Retry-After at the reset it can only mean.
            limit = next_utc_midnight(wall) + DAILY_SLACK - wall
            delay = limit if delay is None else min(delay, limit)
            if self._pause(state, now, delay, "daily_limit"):
                _log.warning("zoom_rate_limited", label=state.name, kind="daily", pause=delay)
            return
        if delay is not None:
            delay = min(delay, MAX_QPS_PAUSE)
        if now < state.echo_until:
            if delay is not None:
                self._pause(state, now, delay, "retry_after")
            return
        reason = "retry_after"
        if delay is None:
            delay = backoff_delay(state.attempt, BACKOFF_BASE, BACKOFF_CAP, self._rng)
            state.attempt += 1
            reason = "backoff"
        self._pause(state, now, delay, reason)
        state.echo_until = now + ECHO_WINDOW
        if state.window is not None:
            state.rate = max(state.min_rate, state.rate * DECREASE)
            state.window.set_rate(state.rate)
        # Recovery counts 429-free time with requests flowing, so not the pause itself.
        state.calm_since = max(now, state.paused_until)
        rate = state.rate if state.window is not None else None
        _log.warning("zoom_rate_limited", label=state.name, kind="qps", pause=delay, rate=rate)

    def _recover(self, state: _Label, now: float) -> None:
        # Reset the backoff once a response arrives well after the pause: requests sent after
        # it are getting through, so the next 429 is a new event, not the same one continuing.
        if state.attempt and now >= state.paused_until + ECHO_WINDOW:
            state.attempt = 0
        calm = now - state.calm_since
        if calm > 0 and state.window is not None and state.rate < state.ceiling:
            # Derived from time, not from the number of responses: a busy label must not
            # climb faster than an idle one.
            gain = RECOVERY_PER_SECOND * state.ceiling * calm
            state.rate = min(state.ceiling, state.rate + gain)
            state.calm_since = now
            state.window.set_rate(state.rate)

    def _pause(self, state: _Label, now: float, delay: float, reason: str) -> bool:
        until = now + max(delay, 0.0)
        if until <= state.paused_until:
            return False
        state.paused_until = until
        state.pause_reason = reason
        return True

    # --- stats -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, float | int | str | None]]:
        """Per label, for metrics and `status`. Rates are requests/s, None when unlimited:
        `configured_rate` (Zoom's x share), `current_rate` (after 429 cuts), `effective_rate`
        (what the throttler admits: whole requests per 1.02 s), `recent_rate` (granted in the
        last window). `paused_until` is wall-clock epoch seconds, None when not paused."""
        now = self._clock()
        wall = self._wall()
        out: dict[str, dict[str, float | int | str | None]] = {}
        for name, s in self._labels.items():
            paused = s.paused_until > now
            out[name] = {
                "configured_rate": None if s.window is None else s.ceiling,
                "current_rate": None if s.window is None else s.rate,
                "effective_rate": None if s.window is None else s.window.effective_rate,
                "recent_rate": None if s.window is None else s.window.recent_rate(),
                "requests": s.requests,
                "rate_limited": s.rate_limited,
                "paused_until": wall + (s.paused_until - now) if paused else None,
                "pause_reason": s.pause_reason if paused else None,
                "daily_used": s.daily_used if s.day == utc_day(wall) else 0,
                "daily_cap": s.daily_cap,
                "wait_seconds": s.wait_total,
            }
        return out
