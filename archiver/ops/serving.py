"""What the webhook and metrics servers do against hostile clients (issue 18).

Anyone who can open a connection to a port could once hold it for an hour (aiohttp's idle
keep-alive) and, with a few thousand such connections, exhaust the daemon's descriptors: then
an attachment download could not open its temp file and archiving stopped. So each server has:

- a connection cap (`connection_cap`), a share of `RLIMIT_NOFILE`, so that both servers at
  their caps leave most descriptors to the archive and the downloads. At the cap, a new
  connection pushes out the oldest one that is not running a handler (half-sent headers, an
  idle keep-alive): a flood of idle connections can never lock out a real request, which
  becomes busy, and so safe, as soon as its headers are in. When every slot is busy, the new
  connection is closed at once.
- one deadline for the headers, which is also the keep-alive bound: aiohttp's keep-alive
  timer starts when the connection opens and closes it when no request has begun by then
  (a client dripping a byte a second is closed as surely as a silent one).
- a body deadline, kept by the handlers that read a body (`read_body`).
- a short lingering close: an unread body is discarded for at most `lingering` seconds.
- accept errors (EMFILE, ENFILE, ENOMEM, ENOBUFS) logged once per burst (`quiet_accept_errors`),
  not once per connection with a traceback; asyncio itself stops accepting for a second.

`Sampler` is the one rule for logs an outsider can trigger: the first few per window, then one
line with how many were left out. The exact counts stay in the metrics.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

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

    def __post_init__(self) -> None:
        if self.max_connections < 1 or not 0 < self.nofile_share <= 1:
            raise ValueError("a server needs at least one connection and a share in (0, 1]")
        if min(self.header_timeout, self.body_timeout, self.lingering) <= 0:
            raise ValueError("timeouts must be positive")


# Zoom sends webhooks from a few dozen addresses at once; 4096 descriptors (the unit's
# LimitNOFILE) give the receiver 256, the metrics port (one Prometheus, a curl) 32.
WEBHOOK_LIMITS: Final = Limits(
    max_connections=256, nofile_share=1 / 16, header_timeout=10.0, body_timeout=10.0
)
METRICS_LIMITS: Final = Limits(
    max_connections=32, nofile_share=1 / 64, header_timeout=10.0, body_timeout=5.0
)


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
    evicted: int = 0  # idle or half-sent connections closed to make room for a new one
    refused: int = 0  # new connections closed at once: every slot was running a handler


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

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.stats = ConnectionStats()
        _LIVE.add(self)
        # aiohttp's handlers take no weak references: both sets are pruned as they go.
        self._busy: set[Any] = set()  # handlers running a request
        self._evicted: set[Any] = set()  # handlers told to close, until they are gone
        self._log = get_logger(component=name)
        self._sampler = Sampler()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        protocol = request.protocol
        self._busy.add(protocol)
        try:
            return await handler(request)
        finally:
            self._busy.discard(protocol)

    def factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        def make() -> asyncio.BaseProtocol:
            # aiohttp keeps connections in arrival order: the first idle one is the oldest.
            connections = server.connections
            self._evicted.intersection_update(connections)
            open_ = [c for c in connections if c not in self._evicted]
            if len(open_) >= self.cap:
                victim = next((c for c in open_ if c not in self._busy), None)
                if victim is None:
                    self.stats.refused += 1
                    self._shed("refused")
                    return _Refused()
                self._evicted.add(victim)
                victim.force_close()
                self.stats.evicted += 1
                self._shed("evicted")
            return server()

        return make

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
                suppressed=suppressed,
            )


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


def runner_for(app: web.Application, limits: Limits, **kwargs: Any) -> web.AppRunner:
    """An AppRunner whose connections keep `limits`' header/keep-alive and lingering bounds."""
    return web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=limits.header_timeout,
        lingering_time=limits.lingering,
        **kwargs,
    )


GUARD: Final = web.AppKey("connection_guard", ConnectionGuard)


def guarded_app(name: str, limits: Limits, **kwargs: Any) -> web.Application:
    """A new Application with a guard's middleware first; the guard is `app[GUARD]`."""
    guard = ConnectionGuard(name, connection_cap(limits))
    app = web.Application(middlewares=[guard.middleware], **kwargs)
    app[GUARD] = guard
    return app


async def start(
    app: web.Application, limits: Limits, host: str, port: int, **kwargs: Any
) -> tuple[web.AppRunner, GuardedSite]:
    """Serve `app` (from `guarded_app`) on host:port with `limits`; the caller cleans the
    runner up. An OSError from listening propagates, the runner cleaned up."""
    quiet_accept_errors(asyncio.get_running_loop())
    runner = runner_for(app, limits, **kwargs)
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, app[GUARD])
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


async def read_body(request: web.Request, limits: Limits) -> bytes | None:
    """The whole body, or None when it did not arrive within the body deadline."""
    try:
        return await asyncio.wait_for(request.read(), limits.body_timeout)
    except TimeoutError:
        return None


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
