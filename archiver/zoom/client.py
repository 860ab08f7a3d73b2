"""The Zoom Phone SMS API client: budgets, OAuth and retries around every call.

Every call draws from its label's budget before it is sent. What an answer means is decided by
`archiver.zoom.policy` alone: 429 -> budget pause and retry; 5xx, 408/425, resets, timeouts
and truncated bodies -> bounded retries with jittered backoff, then ZoomTransientError; 401 ->
invalidate the token and retry with a new one (with backoff after the first), then
ZoomTransientError, never ZoomAuthError; 12004 -> SessionGoneError; 300/7035 on sync ->
SyncTokenInvalid; 403, 404 without 12004 and other 4xx -> ZoomSessionError. Errors carry
status, Zoom code, endpoint (a path template, never a URL with credentials) and session id.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from yarl import URL

from archiver.errors import ZoomResponseError
from archiver.zoom.auth import TokenProvider
from archiver.zoom.models import (
    JsonObject,
    SessionPage,
    SyncPage,
    parse_message,
    parse_session_page,
    parse_sync_page,
)
from archiver.zoom.policy import REPEATING, Action, BodyKind, body_kind, decide, error_for
from archiver.zoom.ratelimit import Budgets, backoff_delay

# Zoom's clock offset is the median of this many recent (Date - our clock) samples.
CLOCK_SAMPLES: Final = 15


@dataclass(frozen=True)
class RetryPolicy:
    transient_attempts: int = 6  # 5xx, resets, timeouts, truncated bodies
    renew_attempts: int = 5  # 401s on API calls, each followed by a new token
    rate_limited_attempts: int = 30  # 429s: the budget pauses between them
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    request_timeout: float = 60.0


class ZoomClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        auth: TokenProvider,
        budgets: Budgets,
        *,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._http = http
        self._clock = clock or (lambda: datetime.now(UTC))  # ours, for `clock_offset`
        self._auth = auth
        self._budgets = budgets
        self._policy = policy or RetryPolicy()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._timeout = aiohttp.ClientTimeout(total=self._policy.request_timeout)
        self.requests = 0
        self.by_label_status: dict[tuple[str, int], int] = {}
        self._offsets: deque[float] = deque(maxlen=CLOCK_SAMPLES)

    @property
    def clock_offset(self) -> timedelta:
        """Zoom's clock minus ours, from the `Date` header of its recent answers (zero before
        the first). `Date` is truncated to the second and stamped before the answer travels,
        so the estimate errs towards Zoom's clock being behind: "that second is over in Zoom's
        time" is never judged early by it. A median, so one odd gateway cannot move it."""
        if not self._offsets:
            return timedelta(0)
        return timedelta(seconds=statistics.median(self._offsets))

    def observe_date(self, value: str | None, received: datetime | None = None) -> None:
        """Record one answer's `Date` header (ignored when absent or not an HTTP date)."""
        if not value:
            return
        try:
            stamped = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return
        if stamped.tzinfo is None:
            stamped = stamped.replace(tzinfo=UTC)
        now = received or self._clock()
        self._offsets.append((stamped - now).total_seconds())

    @property
    def auth(self) -> TokenProvider:
        return self._auth

    # --- endpoints ----------------------------------------------------------------------------

    async def list_sessions(
        self,
        *,
        start: datetime,
        end: datetime,
        session_type: str,
        page_token: str | None = None,
        page_size: int = 100,
    ) -> SessionPage:
        params = {
            "page_size": str(page_size),
            "from": _zoom_time(start),
            "to": _zoom_time(end),
            "session_type": session_type,
            "filter_type": "last_message_time",
        }
        if page_token:
            params["next_page_token"] = page_token
        body = await self.get_json("list_sessions", "/phone/sms/sessions", params)
        return parse_session_page(body, "GET /phone/sms/sessions")

    async def sync(
        self, session_id: str, sync_type: str, count: int, sync_token: str | None = None
    ) -> SyncPage:
        params = {"sync_type": sync_type, "count": str(count)}
        if sync_token:
            params["sync_token"] = sync_token
        path = f"/phone/sms/sessions/{path_segment(session_id)}/sync"
        body = await self.get_json("sync", path, params, session_id=session_id)
        return parse_sync_page(body, "GET /phone/sms/sessions/{sessionId}/sync", session_id)

    async def get_message(self, session_id: str, message_id: str) -> JsonObject:
        path = f"/phone/sms/sessions/{path_segment(session_id)}/messages/{path_segment(message_id)}"
        body = await self.get_json("get_message", path, {}, session_id=session_id)
        return parse_message(
            body, "GET /phone/sms/sessions/{sessionId}/messages/{messageId}", session_id
        )

    # --- transport ----------------------------------------------------------------------------

    async def get_json(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, str],
        *,
        session_id: str | None = None,
    ) -> Any:
        """GET `path` with retries; returns the decoded JSON body of a 200.

        What each answer means is `policy.decide`'s call; this loop only counts the tries.
        """
        template = _template(endpoint)
        tries = dict.fromkeys(REPEATING, 0)
        limits = {
            Action.RETRY: self._policy.transient_attempts,
            Action.RENEW_TOKEN: self._policy.renew_attempts,
            Action.PARK: self._policy.rate_limited_attempts,
        }
        while True:
            label = self._budgets.label_for(endpoint)
            await self._budgets.acquire(label)
            token = await self._auth.token()
            status: int | None = None
            code: int | None = None
            message: str | None = None
            kind = BodyKind.EMPTY
            raw = b""
            try:
                status, headers, raw = await self._send(path, params, token)
            except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
                message = type(exc).__name__  # a class name: never a URL or a token
            else:
                self.requests += 1
                self.observe_date(headers.get("Date"))
                key = (label, status)
                self.by_label_status[key] = self.by_label_status.get(key, 0) + 1
                # Only a 429's body matters to the budget (the daily-limit text); decoding
                # every 250-message page for nothing would cost CPU on the hot path.
                self._budgets.on_response(
                    label, status, headers, raw if status == 429 else None, endpoint=endpoint
                )
                kind = body_kind(raw)
                if status != 200:
                    code, message = _error_fields(raw)
            action = decide(endpoint, status, code, kind)
            if action is Action.ACCEPT:
                return decode_body(raw, template, session_id)
            if action in REPEATING:
                tries[action] += 1
            if action is Action.RENEW_TOKEN:
                await self._auth.invalidate(token)  # even when giving up: never reuse it
            if action not in REPEATING or tries[action] >= limits[action]:
                raise error_for(
                    action,
                    status=status,
                    code=code,
                    message=message,
                    endpoint=template,
                    session_id=session_id,
                    kind=kind,
                )
            if action is Action.RENEW_TOKEN:
                if tries[action] == 1:
                    continue  # an expired token: the new one works at once
                # A new token refused too: it may take a moment to reach every server.
                await asyncio.sleep(self._backoff(tries[action] - 1))
            elif action is Action.RETRY:
                await asyncio.sleep(self._backoff(tries[action]))
            # PARK: the budget has paused the label; acquire() waits (or raises
            # BudgetExhausted when the pause is long).

    async def _send(
        self, path: str, params: Mapping[str, str], token: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        # encoded=True: the path is escaped already (path_segment), and yarl must not
        # normalise it: "sessions/../sync" would become another endpoint.
        url = URL(self._auth.api_base + path, encoded=True)
        async with self._http.get(
            url,
            params=params,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=self._timeout,
        ) as response:
            # read() raises ClientPayloadError on a body shorter than its Content-Length.
            raw = await response.read()
            return response.status, response.headers, raw

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt, self._policy.backoff_base, self._policy.backoff_cap, self._rng
        )


def decode_body(raw: bytes, endpoint: str, session_id: str | None) -> Any:
    """The JSON value of a 200's body, or ZoomResponseError saying why it is none.

    Nesting deeper than the decoder's stack raises RecursionError, not ValueError: uncaught,
    one hostile body would end the task, and with it the daemon.
    """
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        why = " (an HTML page)" if raw.lstrip().startswith(b"<") else ""
        if isinstance(exc, RecursionError):
            why = " (nested too deeply)"
        raise ZoomResponseError(
            "response is not JSON" + why, status=200, endpoint=endpoint, session_id=session_id
        ) from None


def _not_json(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and neither does the manifest.
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf, which no manifest line can hold
        raise ValueError(f"{text[:20]} is out of range")
    return value


def path_segment(value: str) -> str:
    """`value` as one path segment: every reserved character escaped, and a segment of dots
    (".", "..") escaped too, or the URL would be normalised to another endpoint."""
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment.strip(".") == "" else segment


def _template(endpoint: str) -> str:
    return {
        "list_sessions": "GET /phone/sms/sessions",
        "sync": "GET /phone/sms/sessions/{sessionId}/sync",
        "get_message": "GET /phone/sms/sessions/{sessionId}/messages/{messageId}",
        "session_details": "GET /phone/sms/sessions/{sessionId}",
    }.get(endpoint, endpoint)


def _zoom_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_fields(raw: bytes) -> tuple[int | None, str | None]:
    try:
        body = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    message = body.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else None,
    )
