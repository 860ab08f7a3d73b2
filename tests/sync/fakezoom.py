"""A small scripted Zoom for SessionSync's unit tests: one session's messages and sync tokens.

Tokens are opaque ids for a window (oldest index, newest index) over the session's messages,
oldest first. Each behaviour the documentation allows is a knob, so a test can name the one
it is about:
- `short`: a function (request number, sync type) -> page length cap below `count`, or None;
- `isync_boundary`: an ISync page repeats the newest message the token already covers;
- `no_token`: request numbers whose non-empty page comes without `sync_token`;
- `token_life`: tokens are refused (code 300) this many requests after they were issued;
- `inclusive`: a BSync page ends with the oldest message its token covers (an inclusive lower
  bound), so at the start of history it holds that message alone, never nothing.
Every request is recorded as (sync type, token) in `calls`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.errors import SyncTokenInvalid
from archiver.zoom.models import SyncPage

BASE = datetime(2024, 1, 1, tzinfo=UTC)


def make_message(n: int) -> dict[str, Any]:
    return {
        "message_id": f"m{n:05d}",
        "date_time": (BASE + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "direction": "In",
        "message": f"text {n}",
        "message_type": 1,
        "sender": {"phone_number": "+15550100"},
        "to_members": [{"phone_number": "+15550101"}],
    }


@dataclass
class FakeZoom:
    messages: list[dict[str, Any]] = field(default_factory=list)
    short: Callable[[int, str], int | None] = lambda _n, _t: None
    isync_boundary: bool = False
    no_token: set[int] = field(default_factory=set)
    token_life: int | None = None
    inclusive: bool = False
    max_calls: int | None = None  # a walk that never ends fails instead of hanging the test
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    _windows: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # tok -> lo, hi, at
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add(self, n: int) -> None:
        """Append `n` new messages (newer than all others)."""
        start = len(self.messages)
        self.messages.extend(make_message(i) for i in range(start, start + n))

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        number = len(self.calls)
        if self.max_calls is not None and number >= self.max_calls:
            raise RuntimeError(f"still walking after {number} sync calls")
        self.calls.append((sync_type, sync_token))
        cap = self.short(number, sync_type)
        size = count if cap is None else max(1, min(cap, count))
        if sync_type == "FSync":
            hi = len(self.messages) - 1
            lo = max(0, hi - size + 1)
            page = self.messages[lo : hi + 1]
            return self._page(page, lo, hi, number)
        lo, hi = self._window(sync_token, number)
        if sync_type == "BSync":
            covered = 1 if self.inclusive and 0 <= lo < len(self.messages) else 0
            new_lo = max(0, lo - size + covered)
            page = self.messages[new_lo : lo + covered]
            return self._page(page, min(new_lo, lo), hi, number)
        # ISync: the messages after the window, oldest first; 7035 beyond `count`
        newer = self.messages[hi + 1 :]
        if len(newer) > count:
            raise SyncTokenInvalid("too many new", status=400, code=7035, session_id=session_id)
        page = ([self.messages[hi]] if self.isync_boundary and hi >= 0 else []) + newer
        page = page[:size]
        new_hi = hi + len([m for m in page if m is not self.messages[hi]]) if page else hi
        return self._page(page, lo, new_hi, number)

    def _window(self, token: str | None, number: int) -> tuple[int, int]:
        if token is None or token not in self._windows:
            raise SyncTokenInvalid("invalid token", status=400, code=300)
        lo, hi, at = self._windows[token]
        if self.token_life is not None and number - at > self.token_life:
            raise SyncTokenInvalid("expired token", status=400, code=300)
        return lo, hi

    def _page(self, page: list[dict[str, Any]], lo: int, hi: int, number: int) -> SyncPage:
        if page and number in self.no_token:
            return SyncPage(messages=list(reversed(page)), sync_token=None)
        token = f"tok{next(self._ids)}"
        self._windows[token] = (lo, hi, number)
        return SyncPage(messages=list(reversed(page)), sync_token=token)
