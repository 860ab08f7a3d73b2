"""The file host: `GET /file/download/{attachment_id}?jwt=...`, streamed from `content`.

A missing, forged or expired JWT gets 401 with a JSON body (with `quirk_expired_jwt_200`:
HTTP 200 with the same JSON body, the trap of downloaders that save error bodies as files).
An attachment of a deleted session, or an unknown id, is 404. No Range support: every
answer is the whole file with its Content-Length and a Content-Type matching its type.
With `file_gateway_probability`, a request the fault draw left alone may meet a gateway first:
404, 403 or 502 with an HTML page and no code (counted as the `file_gateway` fault), whatever
the JWT and the file.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from archiver.simulator.content import CONTENT_TYPES
from archiver.simulator.faults import FAULT, abort, fault_middleware, file_gateway_answer
from archiver.simulator.state import SimState


def file_app(state: SimState) -> web.Application:
    app = web.Application(
        middlewares=[
            fault_middleware(state, streamed=frozenset({"truncate", "stall"}), count=False)
        ]
    )
    app.router.add_get("/file/download/{attachment_id}", FileHost(state).download, allow_head=False)
    return app


class FileHost:
    def __init__(self, state: SimState) -> None:
        self.state = state

    async def download(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        if request.get(FAULT) is None:
            gateway = file_gateway_answer(state.config, state.fault_rng)
            if gateway is not None:
                state.stats.faults["file_gateway"] += 1
                return gateway
        entry = state.attachments.get(request.match_info["attachment_id"])
        if entry is None or entry[1].deleted:
            return web.json_response({"code": 404, "message": "File does not exist."}, status=404)
        attachment = entry[0]
        token = request.query.get("jwt", "")
        problem = state.file_tokens.problem(token, attachment) if token else "Missing token."
        if problem is not None:
            status = 200 if state.config.quirk_expired_jwt_200 else 401
            return web.json_response({"code": 401, "message": problem}, status=status)
        fault = request.get(FAULT)
        rng = state.fault_rng
        cut = rng.randrange(attachment.size) if fault == "truncate" and attachment.size else None
        stall_at = rng.randrange(attachment.size + 1) if fault == "stall" else None
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[attachment.type]})
        response.content_length = attachment.size
        await response.prepare(request)
        state.stats.downloads += 1
        sent = 0
        for chunk in state.content.chunks(attachment):
            if stall_at is not None and sent + len(chunk) > stall_at:
                await asyncio.sleep(state.config.stall_seconds)
                stall_at = None
            if cut is not None and sent + len(chunk) > cut:
                await response.write(chunk[: cut - sent])
                state.stats.download_bytes += cut - sent
                abort(request)
                return response
            await response.write(chunk)
            sent += len(chunk)
            state.stats.download_bytes += len(chunk)
        await response.write_eof()
        return response
