"""What a case's Zoom does where the documentation leaves it open, and its error answers.

Pure data and pure functions: the model (zoom_model.py) draws from these per request.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

Response = tuple[int, dict[str, str], bytes]
JSON = {"Content-Type": "application/json;charset=UTF-8"}
HTML = {"Content-Type": "text/html"}


@dataclass(frozen=True)
class Faults:
    """Per-request probabilities of an error answer that says nothing about the session."""

    html_404: float = 0.0  # a gateway's 404 page: no Zoom code
    forbidden: float = 0.0  # 403, JSON with another code or an HTML page
    bad_gateway: float = 0.0  # 502 with an HTML body
    server_error: float = 0.0  # 500
    unauthorized: float = 0.0  # the access token is revoked: 401 code 124 until renewed
    rate_limited: float = 0.0  # 429
    reset: float = 0.0  # the connection drops before the answer (the client sees an error)

    def kinds(self) -> list[tuple[str, float]]:
        return [(name, p) for name, p in vars(self).items() if p > 0]


@dataclass(frozen=True)
class Behaviour:
    """What one case's Zoom does where the docs leave it open (probabilities per request)."""

    short_page: float = 0.0  # an FSync/BSync page shorter than count while older ones remain
    boundary: float = 0.0  # ISync: the message the token already covers takes the first slot
    overlap: float = 0.0  # BSync: the oldest message the token covers takes a slot again
    duplicate: float = 0.0  # one message twice in a page (the copy takes a slot)
    order: str = "desc"  # desc | asc | mixed (drawn per page)
    no_token: float = 0.0  # a non-empty page without sync_token
    no_token_empty: float = 0.0  # an empty page without sync_token
    token_lifetime: int | None = None  # ticks a sync token is accepted; None: for ever
    list_page_size: int = 100  # the list's own page size, at most the requested page_size
    live_arrivals: float = 0.0  # per request: a message arrives while the archiver works
    faults: Faults = field(default_factory=Faults)
    short_isync: float = 0.0  # an ISync page shorter than count while newer messages remain
    clock_skew: int = 0  # Zoom's clock minus ours, seconds (its `Date` header says so)
    visible_lag: int = 0  # a new message is visible this many seconds after its date_time
    # The list is paged by offset over the live state (newest first), not a snapshot: a
    # session that moves while the caller pages shifts the others by one.
    offset_paging: bool = False


class Disconnected(Exception):
    """The transport failed (reset, truncated body): the harness raises aiohttp's error."""


def body(status: int, obj: Any) -> Response:
    return status, dict(JSON), json.dumps(obj).encode()


def error(status: int, code: int, message: str) -> Response:
    return body(status, {"code": code, "message": message})


def fault_answer(name: str, rng: random.Random) -> Response:
    """The answer of fault `name` (a field of `Faults`)."""
    if name == "html_404":
        return 404, dict(HTML), b"<html><body><h1>404 Not Found</h1></body></html>"
    if name == "forbidden":
        if rng.random() < 0.5:
            return 403, dict(HTML), b"<html><body>403 Forbidden</body></html>"
        return error(403, 200, "No permission.")
    if name == "bad_gateway":
        return 502, dict(HTML), b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    if name == "server_error":
        return error(500, 500, "Internal error")
    if name == "unauthorized":
        return error(401, 124, "Access token has expired.")
    if name == "rate_limited":
        return error(429, 429, "You have reached the maximum per-second rate limit for this API.")
    raise ValueError(f"no fault {name!r}")
