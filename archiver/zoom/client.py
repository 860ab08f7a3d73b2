"""The Zoom Phone SMS API client: budgets, OAuth, retries and error mapping in one place.

Every call draws from its label's budget before it is sent. Failures map to the error tree in
`archiver.errors`: 429 -> budget pause and retry; 5xx, resets, timeouts and truncated bodies ->
bounded retries with jittered exponential backoff; 401 -> one token renewal, then retry;
404 code 12004 -> SessionGoneError; 300/7035 -> SyncTokenInvalid. Errors carry status, Zoom
code, endpoint (a path template, never a URL with credentials) and session id.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from archiver.errors import (
    SessionGoneError,
    SyncTokenInvalid,
    ZoomAuthError,
    ZoomError,
    ZoomRateLimited,
    ZoomResponseError,
    ZoomTransientError,
)
from archiver.zoom.auth import TokenProvider
from archiver.zoom.models import (
    JsonObject,
    SessionPage,
    SyncPage,
    parse_message,
    parse_session_page,
    parse_sync_page,
)
from archiver.zoom.ratelimit import Budgets, backoff_delay

CODE_INVALID_TOKEN = 124
CODE_SYNC_TOKEN = 300
CODE_TOO_MANY_NEW = 7035
CODE_SESSION_GONE = 12004


@dataclass(frozen=True)
class RetryPolicy:
    transient_attempts: int = 6  # 5xx, resets, timeouts, truncated bodies
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
    ) -> None:
        self._http = http
        self._auth = auth
        self._budgets = budgets
        self._policy = policy or RetryPolicy()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._timeout = aiohttp.ClientTimeout(total=self._policy.request_timeout)
        self.requests = 0
        self.by_label_status: dict[tuple[str, int], int] = {}

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
        """GET `path` with retries; returns the decoded JSON body of a 200."""
        template = _template(endpoint)
        transient = 0
        limited = 0
        renewed = False
        while True:
            label = self._budgets.label_for(endpoint)
            await self._budgets.acquire(label)
            token = await self._auth.token()
            try:
                status, headers, raw = await self._send(path, params, token)
            except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
                transient += 1
                if transient >= self._policy.transient_attempts:
                    raise ZoomTransientError(
                        f"request failed after {transient} attempts: {type(exc).__name__}",
                        endpoint=template,
                        session_id=session_id,
                    ) from exc
                await asyncio.sleep(self._backoff(transient))
                continue
            self.requests += 1
            key = (label, status)
            self.by_label_status[key] = self.by_label_status.get(key, 0) + 1
            # Only a 429's body matters to the budget (the daily-limit text); decoding every
            # 250-message page for nothing would cost CPU on the hot path.
            self._budgets.on_response(
                label, status, headers, raw if status == 429 else None, endpoint=endpoint
            )
            if status == 200:
                return decode_body(raw, template, session_id)
            code, message = _error_fields(raw)
            if status == 429:
                limited += 1
                if limited >= self._policy.rate_limited_attempts:
                    raise ZoomRateLimited(
                        "still rate limited after retries",
                        status=status,
                        code=code,
                        endpoint=template,
                        session_id=session_id,
                    )
                continue
            if status == 401 and not renewed:
                # One renewal, then retry; a second 401 means the credentials are the problem.
                renewed = True
                await self._auth.invalidate(token)
                continue
            if status >= 500 or status in (408, 425):
                transient += 1
                if transient >= self._policy.transient_attempts:
                    raise ZoomTransientError(
                        f"server error after {transient} attempts",
                        status=status,
                        code=code,
                        endpoint=template,
                        session_id=session_id,
                    )
                await asyncio.sleep(self._backoff(transient))
                continue
            raise _map_error(status, code, message, template, session_id)

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


def _map_error(
    status: int, code: int | None, message: str | None, endpoint: str, session_id: str | None
) -> ZoomError:
    # Zoom's message text is safe to show (it never echoes credentials) but is truncated.
    text = (message or "no message")[:200]
    if code == CODE_SESSION_GONE or (status == 404 and endpoint.endswith("/sync") and code is None):
        return SessionGoneError(
            f"session does not exist upstream: {text}",
            status=status,
            code=code,
            endpoint=endpoint,
            session_id=session_id,
        )
    if code in (CODE_SYNC_TOKEN, CODE_TOO_MANY_NEW) and status in (400, 404):
        return SyncTokenInvalid(
            f"resync needed: {text}",
            status=status,
            code=code,
            endpoint=endpoint,
            session_id=session_id,
        )
    if status in (401, 403):
        return ZoomAuthError(
            f"Zoom refused the request: {text}; check the app's scopes "
            "(phone:read:admin or phone_sms:read:admin)",
            status=status,
            code=code,
            endpoint=endpoint,
            session_id=session_id,
        )
    if status == 404:
        return ZoomError(
            f"not found: {text}",
            status=status,
            code=code,
            endpoint=endpoint,
            session_id=session_id,
        )
    return ZoomError(
        f"Zoom answered {status}: {text}",
        status=status,
        code=code,
        endpoint=endpoint,
        session_id=session_id,
    )
