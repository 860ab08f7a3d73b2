"""A Zoom-shaped loopback server whose answers a test scripts, one reply at a time.

Each route (`token`, `list_sessions`, `sync`, `get_message`, `file`) has a queue of replies: a
request takes the next one, or the route's normal answer when the queue is empty. Normal
answers: the token endpoint issues `tok-1`, `tok-2`, ...; the API refuses a token it did not
issue (401, code 124) and otherwise answers from `messages` (one session, `SESSION`);
`/file/<name>` serves `files[name]`. Replies are real HTTP over a real socket, so the client's
whole path (aiohttp, decoding, retries) is exercised.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import jwt
from aiohttp import web

from archiver.config import RateLimitConfig, Secret
from archiver.zoom.auth import TokenProvider
from archiver.zoom.client import RetryPolicy, ZoomClient
from archiver.zoom.ratelimit import Budgets

SESSION: Final = "s1"
HTML_404: Final = b"<!DOCTYPE html><html><body><h1>404 Not Found</h1>nginx</body></html>"
HTML_403: Final = b"<html><head><title>403 Forbidden</title></head><body>denied</body></html>"
HTML_502: Final = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
FAST: Final = RetryPolicy(backoff_base=0.01, backoff_cap=0.05, request_timeout=10.0)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, value: Any) -> Reply:
        return cls(status, json.dumps(value).encode())

    @classmethod
    def html(cls, status: int, page: bytes) -> Reply:
        return cls(status, page, "text/html")

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


def zoom_error(status: int, code: int, message: str) -> Reply:
    return Reply.json(status, {"code": code, "message": message})


def record(message_id: str, *, url: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {
        "message_id": message_id,
        "date_time": "2026-01-02T03:04:05Z",
        "direction": "In",
        "message": "hello",
        "message_type": 2 if url else 1,
        "sender": {"phone_number": "+15550100"},
        "to_members": [{"phone_number": "+15550101"}],
    }
    if url:
        value["attachments"] = [
            {"id": f"a-{message_id}", "name": "a.png", "type": "PNG", "download_url": url}
        ]
    return value


@dataclass
class ScriptedZoom:
    messages: list[dict[str, Any]] = field(default_factory=lambda: [record("m1")])
    script: dict[str, list[Reply]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # /file/<name>
    issued: list[str] = field(default_factory=list)
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (route, token used)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def file_url(self, name: str, exp: float) -> str:
        """A download URL for `files[name]` whose JWT (HS256, a test key) expires at `exp`."""
        token = jwt.encode({"iss": "crossfile", "aud": "file", "exp": int(exp)}, "k" * 32)
        return f"{self.base}/file/{name}?jwt={token}"

    async def file(self, request: web.Request) -> web.Response:
        self.seen.append(("file", None))
        scripted = self._scripted("file")
        if scripted is not None:
            return scripted
        body = self.files.get(request.match_info["name"])
        if body is None:
            return zoom_error(404, 404, "File does not exist.").response()
        return web.Response(body=body, content_type="image/png")

    def then(self, route: str, *replies: Reply) -> None:
        self.script.setdefault(route, []).extend(replies)

    def requests(self, route: str) -> int:
        return sum(1 for name, _ in self.seen if name == route)

    def _scripted(self, route: str) -> web.Response | None:
        queue = self.script.get(route)
        if not queue:
            return None
        return queue.pop(0).response()

    async def token(self, request: web.Request) -> web.Response:
        self.seen.append(("token", None))
        scripted = self._scripted("token")
        if scripted is not None:
            return scripted
        value = f"tok-{len(self.issued) + 1}"
        self.issued.append(value)
        return web.json_response(
            {"access_token": value, "token_type": "bearer", "expires_in": 3599}
        )

    async def api(self, request: web.Request) -> web.Response:
        parts = request.path.split("/")  # /v2/phone/sms/sessions[/<id>/sync|/messages/<id>]
        route = "list_sessions"
        if parts[-1] == "sync":
            route = "sync"
        elif len(parts) > 6 and parts[-2] == "messages":
            route = "get_message"
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append((route, bearer))
        scripted = self._scripted(route)
        if scripted is not None:
            return scripted
        if bearer not in self.issued:
            return zoom_error(401, 124, "Invalid access token.").response()
        if route == "sync":
            fsync = request.query.get("sync_type") == "FSync"
            page = self.messages if fsync else []
            return web.json_response({"sms_histories": page, "sync_token": "dG9rZW4"})
        if route == "get_message":
            for item in self.messages:
                if item["message_id"] == parts[-1]:
                    return web.json_response(item)
            return zoom_error(404, 12004, "Session does not exist: s1").response()
        listing = [{"session_id": SESSION, "session_type": "user"}]
        return web.json_response({"next_page_token": "", "sms_sessions": listing})


@asynccontextmanager
async def scripted_zoom() -> AsyncIterator[ScriptedZoom]:
    zoom = ScriptedZoom()
    app = web.Application()
    app.router.add_post("/oauth/token", zoom.token)
    app.router.add_get("/v2/{tail:.*}", zoom.api)
    app.router.add_get("/file/{name}", zoom.file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        zoom.port = runner.addresses[0][1]
        yield zoom
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client_for(zoom: ScriptedZoom, policy: RetryPolicy = FAST) -> AsyncIterator[ZoomClient]:
    """A real ZoomClient (real TokenProvider, unlimited budgets) talking to `zoom`."""
    async with aiohttp.ClientSession() as http:
        auth = TokenProvider(
            http,
            oauth_url=f"{zoom.base}/oauth/token",
            api_url=f"{zoom.base}/v2",
            account_id="acct",
            client_id="client",
            client_secret=Secret("scripted-secret"),
        )
        budgets = Budgets(RateLimitConfig(plan="unlimited"))
        yield ZoomClient(http, auth, budgets, policy=policy, rng=random.Random(7))
