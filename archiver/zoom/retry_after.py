"""Pure helpers for rate limiting: reading 429 responses (`Retry-After` in every form, the
daily-limit signal), the UTC day, and backoff with jitter.

No I/O and no clocks of their own: every function takes `now`, so tests are plain tables and
the budgets (`ratelimit.py`) and the HTTP client's retries share one definition.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

SECONDS_PER_DAY: Final = 86_400

# RFC 9110 says delta-seconds is a bare non-negative integer. We also take a decimal and a sign
# (a negative value then means "now"): refusing "1.5" would turn a usable hint into a backoff.
_DELTA: Final = re.compile(r"[+-]?\d{1,20}(?:\.\d+)?")
# A delta this large is no delay anyone means (31+ years): it is an epoch timestamp, in
# seconds or, above 1e12, in milliseconds. Zoom has never been seen sending one, but a proxy in
# between might, and reading it as an epoch beats pausing until the cap.
_EPOCH_SECONDS: Final = 1e9
_EPOCH_MILLIS: Final = 1e12
# 2**_MAX_EXPONENT already dwarfs any cap; beyond it the float maths would overflow.
_MAX_EXPONENT: Final = 62

_default_rng = random.Random()  # noqa: S311 - jitter spreads retries; it guards nothing


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait according to a `Retry-After` value, or None when it cannot be read.

    Accepts delta seconds ("2", "1.5"), an HTTP-date in any of the three RFC 9110 forms
    ("Wed, 21 Oct 2015 07:28:00 GMT"), an ISO 8601 timestamp as Zoom sends it
    ("2020-05-31T00:00:00Z", with or without fractional seconds or an offset; no offset means
    UTC), and an epoch timestamp. `now` is wall-clock time (`time.time()`). A time in the past
    gives 0. The result is not capped: what is absurd depends on the kind of limit, so the
    caller decides.
    """
    text = value.strip()
    if not text:
        return None
    if _DELTA.fullmatch(text):
        number = float(text)
        if number >= _EPOCH_MILLIS:
            return max(0.0, number / 1000 - now)
        if number >= _EPOCH_SECONDS:
            return max(0.0, number - now)
        return max(0.0, number)
    moment = _parse_moment(text)
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _parse_moment(text: str) -> datetime | None:
    if text[:1].isdigit() and not text.isdigit():  # all digits: a delta too long to be one
        try:
            # Python 3.11 reads "Z", offsets, and up to 9 fractional digits (truncated to µs).
            return datetime.fromisoformat(text.upper())
        except ValueError:
            pass  # "21 Oct 2015 07:28:00 GMT" starts with a digit too
    try:
        return parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def next_utc_midnight(now: float) -> float:
    """The first UTC midnight strictly after `now` (epoch seconds): when Zoom's daily caps reset.

    POSIX time has no leap seconds, so every UTC day is exactly 86,400 of its seconds.
    """
    return (math.floor(now / SECONDS_PER_DAY) + 1) * float(SECONDS_PER_DAY)


def utc_day(now: float) -> int:
    """The UTC day number of `now` (days since 1970-01-01): the key of a daily counter."""
    return math.floor(now / SECONDS_PER_DAY)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)].

    `attempt` counts from 0. Full jitter (rather than a fixed schedule or +-10%) is what keeps
    many clients, or our own many tasks, that failed together from retrying together.
    """
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    ceiling = min(cap, base * 2.0**exponent)
    return (rng or _default_rng).uniform(0.0, max(ceiling, 0.0))


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """`headers[name]`, matching the name case-insensitively as HTTP requires, also in a dict."""
    value = headers.get(name)
    if value is None and not isinstance(headers, CIMultiDictProxy | CIMultiDict):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def is_daily_limit(headers: Mapping[str, str], body: str | bytes | None = None) -> bool:
    """Whether a 429 is Zoom's daily cap rather than its per-second limit: the header
    `X-RateLimit-Type: Daily-limit`, or, when headers are missing, the body's message
    ("You have reached the maximum daily rate limit for this API...")."""
    kind = header_value(headers, "X-RateLimit-Type")
    if kind is not None and "daily" in kind.lower():
        return True
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return body is not None and "daily rate limit" in body.lower()
