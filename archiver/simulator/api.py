"""The Zoom side: `POST /oauth/token` and the four `/v2/phone/sms/...` endpoints.

Every `/v2` request passes the same gate: access token (401 code 124), then the endpoint's
rate-limit label (429 with the configured header style), then the handler. Bodies are built
by joining pre-encoded bytes (see `model`), which keeps a 250-message page cheap.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from archiver.config import SESSION_TYPES
from archiver.simulator.auth import SCOPE, basic_credentials, same_secret
from archiver.simulator.model import Session, dumps
from archiver.simulator.protocol import (
    JSON_TYPE,
    MSG_124_EXPIRED,
    MSG_124_INVALID,
    MSG_300,
    MSG_7035,
    MSG_BAD_PAGE,
    MSG_DAILY,
    MSG_QPS,
    ApiError,
    int_param,
    invalid_field,
    message_gone,
    session_gone,
    time_window,
)
from archiver.simulator.ratelimit import rate_headers
from archiver.simulator.state import SimState
from archiver.simulator.sync import (
    SYNC_TYPES,
    Quirks,
    TooManyNew,
    decode_token,
    encode_token,
    sync_page,
)

Handler = Callable[[web.Request], Awaitable[web.Response]]
FILTER_TYPES = (
    "last_message_time",
    "sent_message_time",
    "received_message_time",
    "sent_received_message_time",
)
STATUSES = (
    "all",
    "received",
    "delivered",
    "failed_to_send",
    "sent",
    "failed_to_deliver",
    "unknown",
)
PAGE_TOKEN_LIFETIME = 15 * 60  # Zoom: session-details page tokens expire after 15 minutes


def api_routes(state: SimState) -> list[web.RouteDef]:
    api = Api(state)
    base = "/v2/phone/sms/sessions"
    return [
        web.post("/oauth/token", api.oauth),
        web.get(base, api.gate("list_sessions", api.list_sessions), allow_head=False),
        web.get(base + "/{session_id}", api.gate("session_details", api.details), allow_head=False),
        web.get(base + "/{session_id}/sync", api.gate("sync", api.sync), allow_head=False),
        web.get(
            base + "/{session_id}/messages/{message_id}",
            api.gate("get_message", api.get_message),
            allow_head=False,
        ),
    ]


def visible_until(lag: float) -> int | None:
    """The newest message time (ms) shown now under `visible_lag` (None: every message)."""
    return None if not lag else int((time.time() - lag) * 1000)


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=JSON_TYPE)


def _oauth_error(status: int, reason: str, error: str) -> web.Response:
    return web.json_response({"reason": reason, "error": error}, status=status)


def _page_token(*numbers: int) -> str:
    raw = "_".join(map(str, numbers)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_page_token(token: str, parts: int) -> list[int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        numbers = [int(n) for n in raw.split("_")]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, 300, MSG_BAD_PAGE) from None
    if len(numbers) != parts or min(numbers) < 0:
        raise ApiError(400, 300, MSG_BAD_PAGE)
    return numbers


class Api:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def gate(self, endpoint: str, handler: Handler) -> Handler:
        state = self.state

        async def gated(request: web.Request) -> web.Response:
            config, stats = state.config, state.stats
            problem = state.tokens.problem(request.headers.get("Authorization"), time.monotonic())
            if problem is not None:
                stats.unauthorized += 1
                if problem == MSG_124_EXPIRED and state.fault_rng.random() < 0.5:
                    problem = MSG_124_INVALID  # Zoom says either for an expired token
                return ApiError(401, 124, problem).response()
            label = config.labels[endpoint]
            stats.requests_by_label[label] += 1
            stats.requests_by_endpoint[endpoint] += 1
            headers: dict[str, str] = {}
            if config.rate_limits:
                wall = time.time()
                verdict = state.limiter.check(
                    label, config.plan, config.daily_cap, time.monotonic(), wall
                )
                headers = rate_headers(config.header_style, verdict, wall)
                if not verdict.allowed:
                    stats.limited_by_label[label] += 1
                    stats.limited_by_endpoint[endpoint] += 1
                    text = MSG_QPS if verdict.limit_type == "QPS" else MSG_DAILY
                    refused = ApiError(429, 429, text).response()
                    refused.headers.update(headers)
                    return refused
            try:
                response = await handler(request)
            except ApiError as exc:
                if endpoint == "sync":
                    stats.sync_errors[str(exc.code)] += 1
                response = exc.response()
            response.headers.update(headers)
            return response

        return gated

    def _session(self, request: web.Request) -> Session:
        session_id = request.match_info["session_id"]
        session = self.state.by_id.get(session_id)
        if session is None or session.deleted:
            raise session_gone(session_id)
        return session

    async def oauth(self, request: web.Request) -> web.Response:
        state, config = self.state, self.state.config
        params = dict(request.query)
        if request.content_type == "application/x-www-form-urlencoded":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        if params.get("grant_type") != "account_credentials":
            return _oauth_error(400, "unsupported grant type", "unsupported_grant_type")
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is None or not (
            same_secret(credentials[0], config.client_id)
            and same_secret(credentials[1], config.client_secret)
        ):
            return _oauth_error(401, "Invalid client_id or client_secret", "invalid_client")
        if params.get("account_id") != config.account_id:
            return _oauth_error(400, "Invalid client_id or client_secret", "invalid_client")
        token = state.tokens.issue(config.token_lifetime, time.monotonic())
        state.stats.tokens_issued += 1
        return web.json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                # Zoom reports whole seconds left after issuing (3599 for an hour).
                "expires_in": max(1, math.ceil(config.token_lifetime) - 1),
                "scope": SCOPE,
                "api_url": state.base_url,
            }
        )

    async def list_sessions(self, request: web.Request) -> web.Response:
        config, query = self.state.config, request.query
        page_size = int_param(query, "page_size", 30, 1, 100)
        session_type = query.get("session_type") or "user"
        if session_type not in SESSION_TYPES:
            raise ApiError(400, 400, "SMS session type is invalid.")
        filter_type = query.get("filter_type") or "last_message_time"
        if filter_type not in FILTER_TYPES:
            raise invalid_field("filter_type")
        low, high = time_window(query, time.time())
        until = visible_until(config.visible_lag)
        phone = query.get("phone_number")
        after = -1
        if query.get("next_page_token"):
            (after,) = _read_page_token(query["next_page_token"], 1)
        found: list[Session] = []
        more = False
        # Keyset paging on creation order: a session that changes while a client pages
        # cannot make another one skip a page.
        for session in self.state.sessions[after + 1 :]:
            if session.deleted and not config.quirk_list_deleted:
                continue
            if session_type not in ("all", session.session_type):
                continue
            if phone and all(p["phone_number"] != phone for p in (session.owner, *session.peers)):
                continue
            if not session.has_message_between(filter_type, low, high, until):
                continue
            if len(found) == page_size:
                more = True
                break
            found.append(session)
        token = _page_token(found[-1].seq) if more else ""
        return _json(
            b'{"next_page_token":%b,"page_size":%d,"sms_sessions":[%b]}'
            % (dumps(token), page_size, b",".join(s.listing_json(until) for s in found))
        )

    async def details(self, request: web.Request) -> web.Response:
        query = request.query
        page_size = int_param(query, "page_size", 30, 1, 100)
        sort = int_param(query, "sort", 2, 1, 2)
        status = query.get("delivery_status") or "all"
        if status not in STATUSES:
            raise invalid_field("delivery_status")
        low, high = time_window(query, time.time())
        session = self._session(request)
        now = int(time.time())
        offset = 0
        if query.get("next_page_token"):
            offset, issued = _read_page_token(query["next_page_token"], 2)
            if now - issued > PAGE_TOKEN_LIFETIME:
                raise ApiError(400, 300, MSG_BAD_PAGE)
        until = visible_until(self.state.config.visible_lag)
        high = high if until is None else min(high, until)
        lo, hi = bisect.bisect_left(session.times, low), bisect.bisect_right(session.times, high)
        chosen = [m for m in session.messages[lo:hi] if status in ("all", m.delivery_status)]
        if sort == 2:
            chosen.reverse()
        page = chosen[offset : offset + page_size]
        more = offset + page_size < len(chosen)
        token = _page_token(offset + page_size, now) if more else ""
        expiry = self.state.expiry()
        body = b",".join(self.state.message_bytes(m, expiry) for m in page)
        return _json(
            b'{"next_page_token":%b,"page_size":%d,"sms_histories":[%b]}'
            % (dumps(token), page_size, body)
        )

    async def sync(self, request: web.Request) -> web.Response:
        state, config, stats, query = self.state, self.state.config, self.state.stats, request.query
        sync_type = query.get("sync_type") or "FSync"
        if sync_type not in SYNC_TYPES:
            raise invalid_field("sync_type")
        count = int_param(query, "count", None, 1, 250)
        session = self._session(request)
        window = None
        now = time.monotonic()
        if sync_type != "FSync":
            token = query.get("sync_token", "")
            window = decode_token(token, session.session_id)
            if window is None or state.sync_token_expired(token, now):
                raise ApiError(400, 300, MSG_300)
        quirks = Quirks(
            config.quirk_overlap,
            config.quirk_ascending,
            config.quirk_duplicate,
            config.quirk_inclusive_bsync,
        )
        short = state.short_page(sync_type, count)
        try:
            times = session.visible_times(visible_until(config.visible_lag))
            page, window = sync_page(times, sync_type, count, window, quirks, short=short)
        except TooManyNew:
            raise ApiError(400, 7035, MSG_7035) from None
        if short is not None and page and len(page) < count and window.older > session.times[0]:
            stats.faults["short_page"] += 1  # cut short while older messages remain
        body = state.page_body(session, page, state.expiry())
        if not page and config.quirk_no_token_on_empty:
            return _json(b'{"sms_histories":[]}')
        if page and state.drop_token():
            stats.faults["no_token"] += 1
            return _json(b'{"sms_histories":[%b]}' % body)
        token = encode_token(session.session_id, window)
        state.remember_sync_token(token, now)
        return _json(b'{"sms_histories":[%b],"sync_token":"%b"}' % (body, token.encode()))

    async def get_message(self, request: web.Request) -> web.Response:
        session = self._session(request)
        message = session.by_id.get(request.match_info["message_id"])
        if message is None:
            raise message_gone(request.match_info["message_id"])
        return _json(self.state.message_bytes(message, self.state.expiry()))
