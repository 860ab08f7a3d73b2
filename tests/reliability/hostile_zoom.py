"""A small, hostile stand-in for Zoom, for what the simulator will not send.

It serves the OAuth token, the session list, FSync/ISync and the single-message endpoint from
`sessions` (session id -> records, or raw bytes to answer a sync with), plus a file host with
one handler per trick (`/file/<name>`): a plain file, one too large (with and without a
Content-Length), a gzip bomb, a redirect to a foreign host. Ids travel percent-escaped in the
path; they are read back from the raw path so that "/", "." and NUL survive the round trip.
`https_port`: the same file host over TLS with a self-signed certificate.
"""

from __future__ import annotations

import gzip
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from aiohttp import web

TOKEN: Final = "hostile-access-token-0123456789abcdef"
SECRET: Final = "hostile-client-secret"
FILE_BYTES: Final = bytes(range(256)) * 40  # 10,240 bytes
BOMB: Final = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
BIG: Final = 512 * 1024


@dataclass
class HostileZoom:
    sessions: dict[str, list[dict[str, Any]] | bytes] = field(default_factory=dict)
    port: int = 0
    https_port: int = 0
    requests: list[str] = field(default_factory=list)  # raw paths, for the tests to inspect

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def info(self) -> dict[str, str]:
        """What `tests.helpers.write_config` needs."""
        return {
            "api_url": f"{self.base}/v2",
            "oauth_url": f"{self.base}/oauth/token",
            "account_id": "acct",
            "client_id": "client",
            "client_secret": SECRET,
        }

    # --- the API ------------------------------------------------------------------------

    async def oauth(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"access_token": TOKEN, "token_type": "bearer", "expires_in": 3599}
        )

    async def api(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.raw_path)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"code": 124, "message": "Invalid access token."}, status=401)
        parts = request.raw_path.split("?", 1)[0].split("/")
        # /v2/phone/sms/sessions[/<id>/sync | /<id>/messages/<id>]
        if parts[1:5] != ["v2", "phone", "sms", "sessions"]:
            return web.json_response({"code": 404, "message": "no such endpoint"}, status=404)
        rest = [unquote(p) for p in parts[5:]]
        if not rest:
            listing = [
                {
                    "session_id": sid,
                    "session_type": "user",
                    "last_access_time": "2026-01-02T03:04:05Z",
                }
                for sid in self.sessions
            ]
            return web.json_response({"next_page_token": "", "sms_sessions": listing})
        session = self.sessions.get(rest[0])
        if session is None:
            return web.json_response(
                {"code": 12004, "message": "Session does not exist"}, status=404
            )
        if rest[1:] == ["sync"]:
            if isinstance(session, bytes):
                return web.Response(body=session, content_type="application/json")
            fsync = request.query.get("sync_type") == "FSync"
            page = session if fsync else []
            return web.json_response({"sms_histories": page, "sync_token": "dG9rZW4"})
        if len(rest) == 3 and rest[1] == "messages" and not isinstance(session, bytes):
            for record in session:
                if record["message_id"] == rest[2]:
                    return web.json_response(record)
        return web.json_response({"code": 404, "message": "Message does not exist"}, status=404)

    # --- the file host ------------------------------------------------------------------

    async def file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "ok":
            return web.Response(body=FILE_BYTES, content_type="image/png")
        if name == "big":
            return web.Response(body=b"x" * BIG, content_type="video/mp4")
        if name == "big-chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(BIG // 4096):
                await response.write(b"x" * 4096)
            await response.write_eof()
            return response
        if name == "bomb":
            return web.Response(
                body=BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "image/png"}
            )
        if name == "redirect-foreign":
            raise web.HTTPFound("http://evil.example.com/steal")
        return web.json_response({"code": 404, "message": "File does not exist."}, status=404)

    def url(self, name: str, *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        port = self.https_port if scheme == "https" else self.port
        return f"{scheme}://{host}:{port}/file/{name}?jwt=eyJhbGciOiJIUzI1NiJ9.e30.c2ln"


def self_signed(directory: Path) -> ssl.SSLContext:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@asynccontextmanager
async def hostile_zoom(directory: Path) -> AsyncIterator[HostileZoom]:
    zoom = HostileZoom()
    app = web.Application()
    app.router.add_post("/oauth/token", zoom.oauth)
    app.router.add_get("/file/{name}", zoom.file)
    # [\s\S]: the route matches the decoded path, where an id may hold a newline.
    app.router.add_route("GET", r"/v2/{tail:[\s\S]*}", zoom.api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        plain = web.TCPSite(runner, "127.0.0.1", 0)
        await plain.start()
        tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed(directory))
        await tls.start()
        zoom.port, zoom.https_port = (address[1] for address in runner.addresses[:2])
        yield zoom
    finally:
        await runner.cleanup()


def message(message_id: str, *attachments: tuple[str, str, str]) -> dict[str, Any]:
    """A Zoom-shaped record; attachments as (id, name, download_url)."""
    record: dict[str, Any] = {
        "message_id": message_id,
        "date_time": "2026-01-02T03:04:05Z",
        "direction": "In",
        "message": "hello",
        "message_type": 2 if attachments else 1,
        "sender": {"phone_number": "+15550100"},
        "to_members": [{"phone_number": "+15550101"}],
    }
    if attachments:
        record["attachments"] = [
            {"id": aid, "name": name, "type": "PNG", "size": None, "download_url": url}
            for aid, name, url in attachments
        ]
    return record


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
