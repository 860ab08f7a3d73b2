"""Pacing for one rate-limit label: a sliding-window throttler built on asyncio-throttle.

`ratelimit.Budgets` keeps one `Window` per label and changes its rate as 429s come and go;
this module only answers "when may the next request leave?".
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Final

from asyncio_throttle.throttler import Throttler

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW: Final = 1.0
# Zoom counts on its side, after the network. Requests k and k+N leave here >= 1.02 s apart,
# so they arrive > 1 s apart unless their delays (event-loop lag before the write, path
# jitter) differ by 20 ms or more. That covers a healthy path and a busy loop for 2 % of rate.
WINDOW_MARGIN: Final = 0.020
# Sleep this much past the instant a slot frees: the log keeps entries until strictly older
# than the period, and an exact wake-up would find the slot still taken and sleep again.
WAKE_SLACK: Final = 0.0005


class Window(Throttler):
    """asyncio-throttle's sliding log (at most `rate_limit` grants in any `period`), adapted.

    - Clock and sleep are injected, so tests can run hours of budget in microseconds.
    - Waiters queue FIFO behind one lock and sleep exactly until the next slot, instead of
      every waiter polling every `retry_interval`: with thousands of waiters polling costs CPU
      and hands slots out in random order.
    - Grants are paced `period / rate_limit` apart on a virtual schedule (lateness does not
      accumulate), so a window never opens with a burst of N: a burst is what turns a small
      overestimate of our share, or another app's traffic, into a volley of 429s.
    - A fractional rate r becomes floor(r) per second (one per 1/r s below 1/s): Zoom counts
      whole requests per second, and an average of 7.5/s needs some seconds with 8.
    """

    def __init__(self, rate: float, *, clock: Clock, sleep: Sleep) -> None:
        super().__init__(rate_limit=1, period=WINDOW + WINDOW_MARGIN, retry_interval=WAKE_SLACK)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._queued = 0
        self._next_slot = -math.inf
        self._gap = 0.0
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        count = max(1, math.floor(rate + 1e-9))  # 1e-9: 100 * 0.57 is 56.99999999999999
        self.rate_limit = count
        self.period = max(WINDOW, count / rate) + WINDOW_MARGIN
        self._gap = self.period / count

    @property
    def effective_rate(self) -> float:
        return float(self.rate_limit / self.period)

    def recent_rate(self) -> float:
        self.flush()
        return len(self._task_logs) / float(self.period)

    def flush(self, now: float | None = None) -> None:
        logs = self._task_logs
        now = self._clock() if now is None else now
        while logs and now - logs[0] > self.period:
            logs.popleft()

    def _ready_at(self, now: float) -> float:
        self.flush(now)
        ready = self._next_slot
        excess = len(self._task_logs) - self.rate_limit
        if excess >= 0:  # full: wait until enough of the oldest entries age out
            ready = max(ready, self._task_logs[excess] + self.period + self.retry_interval)
        return float(ready)

    def _grant(self, now: float) -> None:
        self._task_logs.append(now)
        late = now - self._next_slot
        self._next_slot = (self._next_slot if late < self._gap else now) + self._gap

    async def acquire(self) -> None:
        if not self._queued:  # the common path: nobody waiting and a slot free
            now = self._clock()
            if self._ready_at(now) <= now:
                self._grant(now)
                return
        self._queued += 1
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    ready = self._ready_at(now)
                    if ready <= now:
                        break
                    await self._sleep(ready - now)
                self._grant(now)
        finally:
            self._queued -= 1
