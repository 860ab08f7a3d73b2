"""Zoom Phone rate limits: a strict sliding one-second window per label, and the Heavy
daily cap, plus the three header styles seen in the wild (zoom/README.md).

Pure: the caller passes the clocks (monotonic for the window, wall time for the UTC day).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

PER_SECOND: Final = {
    "pro": {"light": 20, "medium": 10, "heavy": 5},
    "business": {"light": 40, "medium": 20, "heavy": 10},
}
DAILY: Final = {"pro": 15_000, "business": 30_000}
DAY: Final = 86_400


@dataclass(frozen=True)
class Verdict:
    label: str
    allowed: bool
    limit_type: str  # "QPS" or "Daily-limit"
    limit: int
    remaining: int
    retry_after: float  # seconds until a retry can pass; 0 when allowed


class RateLimiter:
    def __init__(self) -> None:
        self._recent: dict[str, deque[float]] = {}
        self._day = -1
        self._day_count = 0

    def check(
        self, label: str, plan: str, daily_cap: int | None, mono: float, wall: float
    ) -> Verdict:
        """Admit one request of `label` now, or say why not. Refused requests cost nothing."""
        heavy = label == "heavy"
        if heavy:
            cap = DAILY[plan] if daily_cap is None else daily_cap
            day = int(wall // DAY)
            if day != self._day:
                self._day, self._day_count = day, 0
            if self._day_count >= cap:
                return Verdict(label, False, "Daily-limit", cap, 0, (day + 1) * DAY - wall)
        limit = PER_SECOND[plan][label]
        recent = self._recent.setdefault(label, deque())
        while recent and recent[0] <= mono - 1.0:
            recent.popleft()
        if len(recent) >= limit:
            return Verdict(label, False, "QPS", limit, 0, recent[0] + 1.0 - mono)
        recent.append(mono)
        if heavy:
            self._day_count += 1
        return Verdict(label, True, "QPS", limit, limit - len(recent), 0.0)


def rate_headers(style: str, verdict: Verdict, wall: float) -> dict[str, str]:
    """The headers of an answer under `style` (full, iso or none)."""
    if style == "none":
        return {}
    category = verdict.label.capitalize()
    if verdict.allowed:
        if style == "iso":
            return {}
        return {
            "X-RateLimit-Category": category,
            "X-RateLimit-Limit": str(verdict.limit),
            "X-RateLimit-Remaining": str(verdict.remaining),
        }
    if style == "iso":
        at = math.ceil(wall + verdict.retry_after)
        return {
            "X-RateLimit-Type": verdict.limit_type,
            "Retry-After": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        }
    return {
        "X-RateLimit-Category": category,
        "X-RateLimit-Type": verdict.limit_type,
        "X-RateLimit-Limit": str(verdict.limit),
        "X-RateLimit-Remaining": "0",
        "Retry-After": str(max(1, math.ceil(verdict.retry_after))),
    }
