"""What the webhook and metrics servers do against hostile clients (issue 18).

Anyone who can open a connection to a port could once hold it for an hour (aiohttp's idle
keep-alive) and, with a few thousand such connections, exhaust the daemon's descriptors: then
an attachment download could not open its temp file and archiving stopped. So each server has:

- a connection cap (`connection_cap`), a share of `RLIMIT_NOFILE`, so that both servers at
  their caps leave most descriptors to the archive and the downloads. A connection counts
  until asyncio reports it lost (its descriptor closed), not until someone asked it to close:
  `transport.close()` keeps a socket until its unsent answer drains, which a client that
  never reads makes never. At the cap, a new connection pushes one out, aborted (its
  descriptor closed at once, unsent data dropped), in this order: one already closing (an
  answer stuck in its send buffer), the oldest with no request in progress (half-sent
  headers, an idle keep-alive), the slowest still sending its body. Only a request whose
  body is in (its handler at work) is safe: a flood of idle connections or of bodies that
  never end can never lock out a real request. When every slot is at work, the new
  connection is closed at once.
- one deadline for the headers, which is also the keep-alive bound: aiohttp's keep-alive
  timer starts when the connection opens and closes it when no request has begun by then
  (a client dripping a byte a second is closed as surely as a silent one).
- a body deadline and a budget of body bytes in memory for all requests together, kept by
  the handlers that read a body (`read_body`): a body that does not fit pushes the slowest
  body out, or gets a 503.
- a write deadline (`write_timeout`): a connection whose answer has sat unsent that long (a
  client that stopped reading) is aborted by the guard's sweep.
- a short lingering close: an unread body is discarded for at most `lingering` seconds.
- aiohttp's own server log (a malformed request: one traceback each) goes through
  `QuietServerLog`: counted per server, logged a few lines per minute, no traceback.
- accept errors (EMFILE, ENFILE, ENOMEM, ENOBUFS) logged once per burst (`quiet_accept_errors`),
  not once per connection with a traceback; asyncio itself stops accepting for a second.

`Sampler` is the one rule for logs an outsider can trigger: the first few per window, then one
line with how many were left out. The exact counts stay in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from archiver.ops.logs import get_logger

# asyncio's message for an accept() that failed for want of descriptors or memory.
_ACCEPT_MESSAGE: Final = "socket.accept() out of system resource"


@dataclass(frozen=True, slots=True)
class Limits:
    """One server's bounds. `max_connections` is a ceiling; `connection_cap` may lower it."""

    max_connections: int
    nofile_share: float  # at most this fraction of RLIMIT_NOFILE's soft limit
    header_timeout: float  # seconds from connect (or the last response) to a request's headers
    body_timeout: float  # seconds to receive a body, once its headers are in
    lingering: float = 2.0  # seconds an unread body is read and discarded before closing
    write_timeout: float = 10.0  # seconds an answer may sit unsent before the connection goes
    body_budget: int = 4 << 20  # bytes of bodies being read, all connections together
    # Bytes a connection may have read from its socket and not yet handed to a handler: the
    # size of one recv() and aiohttp's buffer (twice this), so a cap of connections that all
    # send at once holds cap x 3 x read_size in memory, not cap x a body.
    read_size: int = 8 << 10
    keep_alive: bool = True  # False: one request per connection (no keep-alive, no pipelining)

    def __post_init__(self) -> None:
        if self.max_connections < 1 or not 0 < self.nofile_share <= 1:
            raise ValueError("a server needs at least one connection and a share in (0, 1]")
        if min(self.header_timeout, self.body_timeout, self.lingering, self.write_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.body_budget < 1 or self.read_size < 1024:
            raise ValueError("the body budget must be positive, the read size >= 1 KiB")


# Zoom sends webhooks from a few dozen addresses at once; 4096 descriptors (the unit's
# LimitNOFILE) give the receiver 256, the metrics port (one Prometheus, a curl) 32. An SMS
# event is a few KB (Zoom's largest example is 2 KB) and arrives in milliseconds: 2 s for
# its body, 4 MiB of bodies in memory at once (16 of the largest allowed, 256 KiB; a
# thousand real events), and at most 256 x 24 KiB = 6 MiB read ahead of the handlers.
WEBHOOK_LIMITS: Final = Limits(
    max_connections=256, nofile_share=1 / 16, header_timeout=10.0, body_timeout=2.0
)
# One request per connection on the metrics port: a scrape every 15 s or more outlives the
# keep-alive bound anyway, and a client pipelining scrapes it never reads gets one answer.
METRICS_LIMITS: Final = Limits(
    max_connections=32,
    nofile_share=1 / 64,
    header_timeout=10.0,
    body_timeout=5.0,
    keep_alive=False,
)
SWEEP_INTERVAL: Final = 1.0  # seconds between two looks for answers stuck unsent


def connection_cap(limits: Limits, nofile: int | None = None) -> int:
    """The connection cap for `limits` under the soft RLIMIT_NOFILE (read when not given)."""
    if nofile is None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile = soft if soft != resource.RLIM_INFINITY else 1 << 20
    return max(1, min(limits.max_connections, int(nofile * limits.nofile_share)))


@dataclass
class Sampler:
    """At most `burst` events per `window` seconds pass; the rest are counted and reported
    in one summary when the next event passes. Pure but for the clock."""

    burst: int = 10
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _started: float = field(default=float("-inf"), init=False)
    _passed: int = field(default=0, init=False)
    _suppressed: int = field(default=0, init=False)

    def admit(self) -> tuple[bool, int]:
        """(log this one?, how many were suppressed since the last one logged)."""
        now = self.clock()
        if now - self._started >= self.window:
            self._started, self._passed = now, 0
        if self._passed >= self.burst:
            self._suppressed += 1
            return False, 0
        self._passed += 1
        suppressed, self._suppressed = self._suppressed, 0
        return True, suppressed


@dataclass
class ConnectionStats:
    evicted: int = 0  # connections aborted to make room for a new one (at the cap)
    refused: int = 0  # new connections closed at once: every slot was running a handler
    stalled: int = 0  # connections aborted because their answer sat unsent (write_timeout)
    bodies_shed: int = 0  # bodies being read, aborted to make room in the body budget
    malformed: int = 0  # requests aiohttp could not parse (answered 400 by aiohttp)
    errors: int = 0  # other exceptions aiohttp's server logged (a handler's bug)


@dataclass(slots=True)
class _Body:
    """A body being read: for the slowest-first choice, and its share of the budget."""

    request: web.BaseRequest
    size: int
    started: float

    def rate(self, now: float) -> float:
        return self.request.content.total_bytes / max(now - self.started, 1e-3)


class _SmallReads(asyncio.Protocol):
    """aiohttp's handler behind a transport that reads `size` bytes per recv() (asyncio's
    default is 256 KiB: for every connection of a flood, before any handler is asked)."""

    def __init__(self, handler: Any, size: int) -> None:
        self._handler, self._size = handler, size

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if hasattr(transport, "max_size"):  # selector transports; others read as they do
            transport.max_size = self._size
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class _Refused(asyncio.Protocol):
    """A connection there is no room for: closed at once, without a byte read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]  # a Transport: no TIME_WAIT data


_LIVE: weakref.WeakSet[ConnectionGuard] = weakref.WeakSet()


def live_guards() -> list[ConnectionGuard]:
    """The guards of the servers alive in this process (for the metrics collector)."""
    return sorted(_LIVE, key=lambda guard: guard.name)


class ConnectionGuard:
    """The protocol factory in front of aiohttp's, enforcing the cap (module docstring)."""

    def __init__(self, name: str, cap: int, limits: Limits | None = None) -> None:
        self.name = name
        self.cap = cap
        self.limits = limits or METRICS_LIMITS
        self.stats = ConnectionStats()
        _LIVE.add(self)
        # aiohttp's handlers take no weak references: these are pruned as they go.
        self._busy: set[Any] = set()  # handlers running a request, its body in
        self._bodies: dict[Any, _Body] = {}  # handlers receiving a body
        self._aborted: set[Any] = set()  # aborted: gone at the loop's next turn
        self._unsent: dict[Any, float] = {}  # handler -> since when its answer sits unsent
        self._server: web.Server | None = None
        self._log = get_logger(component=name)
        self._sampler = Sampler()
        self.server_log = QuietServerLog(self)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        protocol = request.protocol
        self._busy.add(protocol)
        try:
            response = await handler(request)
        finally:
            self._busy.discard(protocol)
            self._bodies.pop(protocol, None)
        if not self.limits.keep_alive:
            response.force_close()
        return response

    # --- the cap -----------------------------------------------------------------------------

    def _transports(self) -> dict[Any, asyncio.Transport]:
        """Every connection asyncio has not yet reported lost, with its transport."""
        if self._server is None:
            return {}
        # Server.connections drops a handler only in connection_lost, but hides the
        # transport, which a handler forgets as soon as it asks for a close.
        transports: dict[Any, asyncio.Transport] = self._server._connections
        return transports

    def factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        self._server = server

        def make() -> asyncio.BaseProtocol:
            connections = self._transports()
            self._aborted.intersection_update(connections)
            if len(connections) - len(self._aborted) >= self.cap:
                victim = self._victim(connections)
                if victim is None:
                    self.stats.refused += 1
                    self._shed("refused")
                    return _Refused()
                self._abort(victim)
                self.stats.evicted += 1
                self._shed("evicted")
            return _SmallReads(server(), self.limits.read_size)

        return make

    def _victim(self, connections: dict[Any, asyncio.Transport]) -> Any | None:
        """Who makes room: one already closing, the oldest without a request in progress,
        the slowest body (dicts keep arrival order: the first found is the oldest)."""
        live = [c for c in connections if c not in self._aborted]
        closing = next((c for c in live if connections[c].is_closing()), None)
        if closing is not None:
            return closing
        idle = next((c for c in live if c not in self._busy and c not in self._bodies), None)
        if idle is not None:
            return idle
        return self._slowest_body()

    def _slowest_body(self, spare: Any = None) -> Any | None:
        now = time.monotonic()
        readers = [(b.rate(now), h) for h, b in self._bodies.items() if h is not spare]
        readers = [(rate, h) for rate, h in readers if h not in self._aborted]
        return min(readers, key=lambda pair: pair[0])[1] if readers else None

    def _abort(self, handler: Any) -> None:
        transport = self._transports().get(handler)
        self._aborted.add(handler)
        self._bodies.pop(handler, None)  # its budget share is free at once
        self._unsent.pop(handler, None)
        if transport is not None:
            transport.abort()  # the descriptor is closed now, unsent data dropped
        else:
            handler.force_close()

    # --- bodies ------------------------------------------------------------------------------

    def start_body(self, request: web.BaseRequest, size: int) -> bool:
        """Reserve `size` bytes of the body budget for `request`'s body, pushing the slowest
        other bodies out as needed. False: no room (every byte is the request's own)."""
        budget = max(self.limits.body_budget, size)
        protocol = request.protocol
        while sum(b.size for b in self._bodies.values()) + size > budget:
            victim = self._slowest_body(spare=protocol)
            if victim is None:
                return False
            self._abort(victim)
            self.stats.bodies_shed += 1
            self._shed("body_shed")
        self._busy.discard(protocol)  # receiving: evictable, slowest first
        self._bodies[protocol] = _Body(request, size, time.monotonic())
        return True

    def end_body(self, request: web.BaseRequest) -> None:
        protocol = request.protocol
        if self._bodies.pop(protocol, None) is not None:
            self._busy.add(protocol)  # the middleware's finally lets go of it

    # --- answers stuck unsent ----------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Abort the connections whose answer has sat unsent (or that have been closing with
        data unsent) for `write_timeout`; returns how many."""
        now = time.monotonic() if now is None else now
        connections = self._transports()
        aborted = 0
        for handler, transport in list(connections.items()):
            if handler in self._aborted:
                continue
            if transport.get_write_buffer_size() == 0 and not transport.is_closing():
                self._unsent.pop(handler, None)
                continue
            since = self._unsent.setdefault(handler, now)
            if now - since >= self.limits.write_timeout:
                self._abort(handler)
                self.stats.stalled += 1
                aborted += 1
        for handler in [h for h in self._unsent if h not in connections]:
            del self._unsent[handler]
        if aborted:
            self._shed("stalled")
        return aborted

    async def sweep_forever(self, interval: float = SWEEP_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def _shed(self, how: str) -> None:
        admit, suppressed = self._sampler.admit()
        if admit:
            self._log.warning(
                "http_connections_at_cap",
                server=self.name,
                cap=self.cap,
                shed=how,
                evicted=self.stats.evicted,
                refused=self.stats.refused,
                stalled=self.stats.stalled,
                bodies_shed=self.stats.bodies_shed,
                suppressed=suppressed,
            )


class QuietServerLog(logging.Logger):
    """What aiohttp's server logs through (its `logger`): a malformed request is counted
    (`stats.malformed`) and logged a few lines per minute, with its error but no traceback;
    any other exception (a handler's bug) likewise, as an error. Nothing reaches the stdlib
    root logger, whose last-resort handler wrote one traceback per request to stderr."""

    def __init__(self, guard: ConnectionGuard) -> None:
        super().__init__(f"archiver.http.{guard.name}", logging.DEBUG)
        self.propagate = False
        self._guard = guard
        self._out = get_logger(component=guard.name)
        self._sampler = Sampler(burst=5, window=60.0)

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG  # aiohttp's debug lines (BadHttpMethod...) are dropped

    def _log_call(self, level: int, msg: object, args: Any, exc_info: Any) -> None:
        if exc_info is True:
            exc_info = sys.exc_info()[1]
        exc = exc_info if isinstance(exc_info, BaseException) else None
        malformed = isinstance(exc, HttpProcessingError)
        if malformed:
            self._guard.stats.malformed += 1
        else:
            self._guard.stats.errors += 1
        admit, suppressed = self._sampler.admit()
        if not admit:
            return
        text = str(msg) % args if args else str(msg)
        event = "http_malformed_request" if malformed else "http_server_error"
        emit = self._out.warning if malformed else self._out.error
        emit(
            event,
            server=self._guard.name,
            detail=text[:200],
            error=_describe(exc),
            suppressed=suppressed,  # lines left out since the last one; counts in metrics
        )

    def _log(  # type: ignore[override]
        self, level: int, msg: object, args: Any, exc_info: Any = None, **_: Any
    ) -> None:
        if level > logging.DEBUG:
            self._log_call(level, msg, args, exc_info)


def _describe(exc: BaseException | None) -> str | None:
    """The exception's type and the first line of its message: aiohttp's parse errors go on
    to quote the client's bytes, which are not ours to log."""
    if exc is None:
        return None
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    first = str(text).splitlines()[0] if str(text) else ""
    return f"{type(exc).__name__}: {first.rstrip(':')}"[:200]


class GuardedSite(web.BaseSite):
    """`web.TCPSite`, with `ConnectionGuard` as the protocol factory."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, backlog=128)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        server = self._server
        assert isinstance(server, asyncio.Server)
        return int(server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.factory(server), self._host, self._port, backlog=self._backlog
        )
        self._sweeper = asyncio.create_task(
            self._guard.sweep_forever(), name=f"{self._guard.name}-sweep"
        )

    async def stop(self) -> None:
        sweeper = getattr(self, "_sweeper", None)
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await super().stop()


def runner_for(
    app: web.Application, limits: Limits, guard: ConnectionGuard | None = None, **kwargs: Any
) -> web.AppRunner:
    """An AppRunner whose connections keep `limits`' header/keep-alive and lingering bounds,
    aiohttp's server log going through the guard's `QuietServerLog`, no access log."""
    if guard is None:
        guard = app.get(GUARD) or ConnectionGuard("http", connection_cap(limits), limits)
    return web.AppRunner(
        app,
        access_log=None,
        logger=guard.server_log,
        read_bufsize=limits.read_size,
        keepalive_timeout=limits.header_timeout,
        lingering_time=limits.lingering,
        **kwargs,
    )


GUARD: Final = web.AppKey("connection_guard", ConnectionGuard)


def guarded_app(name: str, limits: Limits, **kwargs: Any) -> web.Application:
    """A new Application with a guard's middleware first; the guard is `app[GUARD]`."""
    guard = ConnectionGuard(name, connection_cap(limits), limits)
    app = web.Application(middlewares=[guard.middleware], **kwargs)
    app[GUARD] = guard
    return app


async def start(
    app: web.Application, limits: Limits, host: str, port: int, **kwargs: Any
) -> tuple[web.AppRunner, GuardedSite]:
    """Serve `app` (from `guarded_app`) on host:port with `limits`; the caller cleans the
    runner up. An OSError from listening propagates, the runner cleaned up."""
    quiet_accept_errors(asyncio.get_running_loop())
    runner = runner_for(app, limits, app[GUARD], **kwargs)
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, app[GUARD])
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


@dataclass(frozen=True, slots=True)
class NoBody:
    """Why `read_body` has no body: `status` and `reason` to answer with."""

    status: int
    reason: str


BODY_TIMEOUT: Final = NoBody(408, "body_timeout")
NO_ROOM: Final = NoBody(503, "no_room")  # the body budget is all at work; Zoom retries


async def read_body(request: web.Request, limits: Limits, max_size: int) -> bytes | NoBody:
    """The whole body (at most `max_size` bytes: aiohttp's 413 beyond), or why not: it did
    not arrive within the body deadline, or there is no room in the body budget.

    While the body arrives, the connection is the guard's to push out (slowest first), so
    bodies that never end cannot hold the cap or the memory."""
    guard = request.app[GUARD]
    length = request.content_length
    if not guard.start_body(request, max_size if length is None else min(length, max_size)):
        return NO_ROOM
    try:
        return await asyncio.wait_for(request.read(), limits.body_timeout)
    except TimeoutError:
        return BODY_TIMEOUT
    finally:
        guard.end_body(request)


# --- accept errors -----------------------------------------------------------------------------

_QUIETED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sampler] = (
    weakref.WeakKeyDictionary()
)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log accept() failures for want of resources once per burst, without a traceback.

    Every other exception context still goes to the handler that was set before (or asyncio's
    default). Idempotent per loop.
    """
    if loop in _QUIETED:
        return
    sampler = _QUIETED[loop] = Sampler(burst=1, window=60.0)
    previous = loop.get_exception_handler()
    log = get_logger(component="http")

    def handler(loop_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_MESSAGE:
            admit, suppressed = sampler.admit()
            if admit:
                exc = context.get("exception")
                log.warning(
                    "http_accept_failed",
                    error=getattr(exc, "strerror", None) or repr(exc),
                    suppressed=suppressed,
                    hint="out of descriptors or memory; asyncio retries accept() in 1 s",
                )
            return
        if previous is not None:
            previous(loop_, context)
        else:
            loop_.default_exception_handler(context)

    loop.set_exception_handler(handler)


def is_resource_exhaustion(exc: BaseException) -> bool:
    """EMFILE, ENFILE, ENOMEM, ENOBUFS: the OS is out of something for now; wait and retry."""
    return isinstance(exc, OSError) and exc.errno in {
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
        errno.ENOBUFS,
    }
