"""The simulator's own endpoints, under `/_sim` on the API port (no auth, no faults, no limits).

| method and path | body | answer |
|---|---|---|
| `GET /_sim/truth` | | NDJSON ground truth (see `Simulator.ground_truth`), streamed |
| `GET /_sim/stats` | | JSON counters (see `Simulator.stats`) |
| `POST /_sim/switches` | JSON object of switches | the switches now in force; 400 if refused |
| `POST /_sim/messages` | `{"n", "session_id", "new_session", "attachments"}` | `{"messages"}` |
| `POST /_sim/revoke` | | `{"revoked": <tokens>}`: every access token stops working |
| `POST /_sim/sessions/{id}/delete` | | `{"deleted": id}`, 404 if unknown or already deleted |
| `POST /_sim/webhook/validate` | | `{"valid": bool}`: Zoom's URL validation of `webhook_url` |
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from aiohttp import web

from archiver.errors import ConfigError


class Controls(Protocol):
    def set_switches(self, **changes: Any) -> dict[str, Any]: ...
    def add_messages(
        self, n: int, session_id: str | None = None, new_session: bool = False, attachments: int = 0
    ) -> list[dict[str, Any]]: ...
    def delete_session(self, session_id: str) -> None: ...
    def revoke_tokens(self) -> int: ...
    async def validate_webhook(self) -> bool: ...
    def truth_lines(self) -> Iterator[bytes]: ...
    def stats(self) -> dict[str, Any]: ...


def _refused(reason: str, status: int = 400) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        value = await request.json() if request.can_read_body else {}
    except json.JSONDecodeError:
        raise _bad_request("body is not JSON") from None
    if not isinstance(value, dict):
        raise _bad_request("body must be a JSON object")
    return value


def _bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": reason}), content_type="application/json")


def control_routes(controls: Controls) -> list[web.RouteDef]:
    async def truth(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        batch: list[bytes] = []
        for line in controls.truth_lines():
            batch.append(line)
            if len(batch) >= 512:
                await response.write(b"".join(batch))
                batch.clear()
        await response.write(b"".join(batch))
        await response.write_eof()
        return response

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(controls.stats())

    async def switches(request: web.Request) -> web.Response:
        try:
            return web.json_response(controls.set_switches(**await _json_object(request)))
        except (ConfigError, TypeError) as exc:
            return _refused(str(exc))

    async def messages(request: web.Request) -> web.Response:
        body = await _json_object(request)
        try:
            added = controls.add_messages(
                int(body.get("n", 1)),
                session_id=body.get("session_id"),
                new_session=bool(body.get("new_session", False)),
                attachments=int(body.get("attachments", 0)),
            )
        except KeyError:
            return _refused("unknown or deleted session", 404)
        except (TypeError, ValueError) as exc:
            return _refused(str(exc))
        return web.json_response({"messages": added})

    async def revoke(request: web.Request) -> web.Response:
        return web.json_response({"revoked": controls.revoke_tokens()})

    async def delete(request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        try:
            controls.delete_session(session_id)
        except KeyError:
            return _refused("unknown or already deleted session", 404)
        return web.json_response({"deleted": session_id})

    async def validate(request: web.Request) -> web.Response:
        return web.json_response({"valid": await controls.validate_webhook()})

    return [
        web.get("/_sim/truth", truth, allow_head=False),
        web.get("/_sim/stats", stats, allow_head=False),
        web.post("/_sim/switches", switches),
        web.post("/_sim/messages", messages),
        web.post("/_sim/revoke", revoke),
        web.post("/_sim/sessions/{session_id}/delete", delete),
        web.post("/_sim/webhook/validate", validate),
    ]
