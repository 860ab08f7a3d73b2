"""Zoom's webhook signature, URL validation and replay memory, as pure functions.

Zoom signs every request, the URL-validation challenge included (zoom/README.md, Webhooks):

    x-zm-request-timestamp: <unix seconds>
    x-zm-signature: v0=<hex HMAC-SHA256(secret token, "v0:{timestamp}:{raw body}")>

The signature is checked over the raw bytes as received (never a re-serialised JSON, whose
spacing or key order could differ), with a constant-time compare. A correctly signed request
whose timestamp is further from now than the tolerance is refused too: that is what stops a
captured request from being replayed later. Inside the window, `ReplayMemory` recognises the
exact request seen before; Zoom's own retries are new requests (fresh timestamp, new signature)
and are left to the manifest writer's dedupe.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from enum import Enum
from typing import Final

SIGNATURE_VERSION: Final = "v0"
TIMESTAMP_HEADER: Final = "x-zm-request-timestamp"
SIGNATURE_HEADER: Final = "x-zm-signature"
# Unix seconds have 10 digits until 2286; anything much longer is not a timestamp.
_MAX_TIMESTAMP_DIGITS: Final = 12
_HEX: Final = frozenset("0123456789abcdef")
_SIGNATURE_LENGTH: Final = len(SIGNATURE_VERSION) + 1 + 64  # "v0=" and a SHA-256 in hex


class Refusal(Enum):
    """Why a request was refused (401). The value is the `reason` logged."""

    MISSING_TIMESTAMP = "missing_timestamp"
    MISSING_SIGNATURE = "missing_signature"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale_timestamp"
    FUTURE = "future_timestamp"


def hmac_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `x-zm-signature` value Zoom sends for `body` at `timestamp`."""
    message = b"%s:%s:%s" % (SIGNATURE_VERSION.encode(), timestamp.encode("ascii"), body)
    return f"{SIGNATURE_VERSION}={hmac_hex(secret, message)}"


def header_refusal(timestamp: str | None, provided: str | None) -> Refusal | None:
    """Why the signature headers alone already refuse a request (missing, or not of the shape
    Zoom sends), or None: then only the body can tell. The receiver asks this before it reads
    a byte of the body; `check_request` asks it first too, so the two cannot disagree."""
    if not timestamp:
        return Refusal.MISSING_TIMESTAMP
    if not provided:
        return Refusal.MISSING_SIGNATURE
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        return Refusal.BAD_TIMESTAMP
    prefix, _, digest = provided.partition("=")
    if prefix != SIGNATURE_VERSION or len(provided) != _SIGNATURE_LENGTH or set(digest) - _HEX:
        return Refusal.BAD_SIGNATURE
    return None


def clock_refusal(timestamp: str, *, now: float, tolerance: float) -> Refusal | None:
    """STALE or FUTURE when a timestamp of the right shape (`header_refusal` found nothing)
    is outside the tolerance. The receiver asks this before it reads the body: a forged but
    well-shaped pair of headers with an old time costs no body; `check_request` still checks
    the signature first, so its "stale" is a genuine request's."""
    age = now - int(timestamp)
    if age > tolerance:
        return Refusal.STALE
    if age < -tolerance:
        return Refusal.FUTURE
    return None


def check_request(
    secret: bytes,
    timestamp: str | None,
    provided: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> Refusal | None:
    """None when the request is Zoom's and fresh; otherwise why it is refused.

    The signature is checked before the clock, so a forged request is reported as forged, and
    "stale" always means a genuine request that is too old (a replay, or a skewed clock).
    """
    refusal = header_refusal(timestamp, provided)
    if refusal is not None:
        return refusal
    assert timestamp is not None and provided is not None
    expected = signature(secret, timestamp, body).encode()
    # Of the right shape here, hence ASCII; the compare is constant-time all the same.
    if not hmac.compare_digest(expected, provided.encode("ascii")):
        return Refusal.BAD_SIGNATURE
    return clock_refusal(timestamp, now=now, tolerance=tolerance)


def url_validation_answer(secret: bytes, plain_token: str) -> dict[str, str]:
    """The body Zoom expects in answer to `endpoint.url_validation`."""
    return {
        "plainToken": plain_token,
        "encryptedToken": hmac_hex(secret, plain_token.encode("utf-8")),
    }


class ReplayMemory:
    """Signatures of requests already answered, for as long as their timestamp is acceptable.

    Bounded twice: entries leave once older than the tolerance (a replay of them is refused as
    stale anyway), and the oldest leave first beyond `capacity`. Forgetting early costs
    nothing but a second trip to the writer, whose dedupe writes no line for known content.
    """

    def __init__(self, tolerance: float, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._tolerance = tolerance
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> request timestamp

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str, now: float) -> bool:
        self._expire(now)
        return key in self._seen

    def remember(self, key: str, timestamp: float, now: float) -> None:
        self._expire(now)
        self._seen[key] = timestamp
        self._seen.move_to_end(key)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        # Insertion order is close to timestamp order (requests arrive roughly in time), so
        # this looks at the front only; a straggler is dropped by capacity at worst.
        while self._seen:
            key, stamp = next(iter(self._seen.items()))
            if now - stamp <= self._tolerance:
                return
            del self._seen[key]
