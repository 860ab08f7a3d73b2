"""Fault injection for both servers, drawn from the fault RNG (never the data RNG).

One draw per request picks at most one fault, with the probabilities of the `fault_*`
switches. The middleware acts out 5xx, reset, slow and stall itself, and truncates plain
(non-streamed) answers; a streaming handler (the file host) finds the fault under `FAULT`
in the request and truncates or stalls mid-body on its own.

A request left without a fault may meet a gateway in front of the API (`/v2` paths only, not
the OAuth token endpoint): one more draw, with the `html_404_probability` and
`forbidden_probability` switches, answers 404 with an HTML page, or 403 with Zoom's JSON or
an HTML page, before the access token is even looked at. Neither says anything about the
session: the data behind it is untouched. The file host has its own gateway
(`file_gateway_probability`, drawn by the file host for a request left without a fault): 404,
403 or 502 with an HTML page, which says nothing about the file either.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from archiver.simulator.config import FAULTS, SimulatorConfig
from archiver.simulator.state import SimState

FAULT: Final = web.RequestKey("sim_fault", str)
CONTROL_PREFIX: Final = "/_sim"
API_PREFIX: Final = "/v2/"
# Zoom's generic refusal, as its other APIs send it; anything but 12004 (session gone).
FORBIDDEN_JSON: Final = {"code": 200, "message": "No permission."}


def choose_fault(config: SimulatorConfig, rng: random.Random) -> str | None:
    """'5xx', 'reset', 'truncate', 'slow', 'stall' or None, by the configured odds."""
    if not any(getattr(config, name) for name in FAULTS):
        return None  # the common case costs no RNG draw
    roll = rng.random()
    for name in FAULTS:
        roll -= getattr(config, name)
        if roll < 0:
            return name.removeprefix("fault_")
    return None


def choose_gateway(config: SimulatorConfig, rng: random.Random, path: str) -> str | None:
    """'html_404', 'forbidden' or None for a request to `path`, by the configured odds."""
    p404, p403 = config.html_404_probability, config.forbidden_probability
    if not (p404 or p403) or not path.startswith(API_PREFIX):
        return None  # no draw when off: the other faults keep their sequence
    roll = rng.random()
    if roll < p404:
        return "html_404"
    return "forbidden" if roll < p404 + p403 else None


def gateway_answer(kind: str, rng: random.Random) -> web.Response:
    if kind == "html_404":
        return _html(404, "Not Found")
    if rng.random() < 0.5:
        return web.json_response(FORBIDDEN_JSON, status=403)
    return _html(403, "Forbidden")


def file_gateway_answer(config: SimulatorConfig, rng: random.Random) -> web.Response | None:
    """A gateway page in front of the file host (404, 403 or 502, HTML, no code), by the
    `file_gateway_probability` odds; None (and no draw when the switch is off) otherwise."""
    chance = config.file_gateway_probability
    if not chance or rng.random() >= chance:
        return None
    status, reason = rng.choice(((404, "Not Found"), (403, "Forbidden"), (502, "Bad Gateway")))
    return _html(status, reason)


def _html(status: int, reason: str) -> web.Response:
    title = f"{status} {reason}"
    page = (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        "<hr><center>gateway</center></body></html>"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def abort(request: web.Request) -> None:
    """Close the connection with a TCP reset, as a crashed proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def server_error(rng: random.Random) -> web.Response:
    status = rng.choice((500, 502, 503))
    if rng.random() < 0.5:
        body = json.dumps({"code": status, "message": "Internal Server Error"})
        return web.Response(status=status, text=body, content_type="application/json")
    html = f"<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
    return web.Response(status=status, text=html, content_type="text/html")


async def truncate(request: web.Request, response: web.Response) -> web.StreamResponse:
    """Send the head with the full Content-Length, half the body, then reset."""
    body = response.body
    assert isinstance(body, bytes), "plain answers carry bytes"
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    abort(request)
    return stream


def fault_middleware(state: SimState, *, streamed: frozenset[str], count: bool) -> Middleware:
    """Faults (and, with `count`, request/status counting) for every non-control path."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        config, stats = state.config, state.stats
        if count:
            stats.requests_total += 1
        fault = choose_fault(config, state.fault_rng)
        if fault is not None:
            stats.faults[fault] += 1
        else:
            gateway = choose_gateway(config, state.fault_rng, request.path)
            if gateway is not None:
                stats.faults[gateway] += 1
                return _counted(state, count, gateway_answer(gateway, state.fault_rng))
        if fault == "5xx":
            return _counted(state, count, server_error(state.fault_rng))
        if fault == "reset":
            abort(request)
            return web.Response()
        if fault == "slow":
            await asyncio.sleep(config.slow_seconds)
        if fault == "stall" and fault not in streamed:
            await asyncio.sleep(config.stall_seconds)
        if fault is not None:
            request[FAULT] = fault
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _counted(state, count, exc)
            raise
        if fault == "truncate" and fault not in streamed and isinstance(response, web.Response):
            return await truncate(request, response)
        return _counted(state, count, response)

    return middleware


def _counted(state: SimState, count: bool, response: web.StreamResponse) -> web.StreamResponse:
    if count:
        state.stats.by_status[response.status] += 1
    return response
