"""Zoom's error bodies and query-parameter rules, as pure functions.

Verbatim texts come from Zoom's spec (zoom/README.md). Codes Zoom does not document are
marked "simulator" below; clients should key on the HTTP status for those.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Mapping
from typing import Final

from aiohttp import web

MSG_300: Final = "The sync token is invalid or expired. Please resync with the `FSync` method."
MSG_7035: Final = (
    "The number of new records exceeds the sync count. Please resync with the `FSync` method."
)
MSG_QPS: Final = "You have reached the maximum per-second rate limit for this API. Try again later."
MSG_DAILY: Final = (
    "You have reached the maximum daily rate limit for this API. Refer to the response header "
    "for details on when you can make another request."
)
MSG_124_INVALID: Final = "Invalid access token."
MSG_124_EXPIRED: Final = "Access token has expired."
MSG_BAD_PAGE: Final = "The next page token is invalid or expired."
DAY: Final = 86_400
MAX_WINDOW: Final = 31 * DAY  # "a month" of from/to
JSON_TYPE: Final = "application/json"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


class ApiError(Exception):
    """An error answer: HTTP status plus Zoom's `{"code", "message"}` body."""

    def __init__(
        self, status: int, code: int, message: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> bytes:
        payload: dict[str, object] = {"code": self.code, "message": self.message}
        if self.errors:
            payload["errors"] = self.errors
        return json.dumps(payload).encode()

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body(), content_type=JSON_TYPE)


def invalid_field(name: str) -> ApiError:
    """Zoom's validation failure (code 300) naming the offending parameter."""
    return ApiError(400, 300, "Validation Failed.", [{"field": name, "message": "Invalid field."}])


def session_gone(session_id: str) -> ApiError:
    return ApiError(404, 12004, f"Session does not exist: {session_id}.")


def message_gone(message_id: str) -> ApiError:
    return ApiError(404, 12005, f"Message does not exist: {message_id}.")  # simulator code


def int_param(query: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int:
    """An integer query parameter in [lo, hi]; missing -> default, or 300 when required."""
    text = query.get(name)
    if text is None or text == "":
        if default is None:
            raise invalid_field(name)
        return default
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise invalid_field(name)
    return int(text)


def parse_time(text: str, name: str, end: bool) -> int:
    """Unix seconds of a `from`/`to` value; a date `to` means the end of that day."""
    try:
        if _DATETIME.fullmatch(text):
            return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
        if _DATE.fullmatch(text):
            day = calendar.timegm(time.strptime(text, "%Y-%m-%d"))
            return day + DAY - 1 if end else day
    except (ValueError, OverflowError):
        pass
    raise invalid_field(name)


def time_window(query: Mapping[str, str], now: float) -> tuple[int, int]:
    """[from, to] in ms, both inclusive; no from/to means the last 30 days."""
    has_from, has_to = bool(query.get("from")), bool(query.get("to"))
    if not has_from and not has_to:
        now_ms = int(now * 1000)
        return now_ms - 30 * DAY * 1000, now_ms
    if not (has_from and has_to):
        raise invalid_field("to" if has_from else "from")
    start = parse_time(query["from"], "from", end=False)
    stop = parse_time(query["to"], "to", end=True)
    if stop < start:
        raise ApiError(400, 300, "The to date must not be before the from date.")
    if stop - start >= MAX_WINDOW:
        raise ApiError(400, 300, "The date range between from and to must be within one month.")
    return start * 1000, stop * 1000 + 999
