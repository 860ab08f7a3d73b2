"""`Simulator`: both servers on loopback, the live-traffic task, and the in-process controls.

    async with Simulator(SimulatorConfig(sessions=5)) as sim:
        ...  # sim.api_url, sim.oauth_url, sim.file_url, sim.control_url

With `webhook_url` set, messages added while it runs are also posted there as Zoom's signed
events (`webhooks`).

Start-up binds both sockets first (so the file host's address is known), builds the account
in a worker thread (hashing a 2 GiB attachment must not freeze the loop), then serves.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from archiver.simulator.api import api_routes
from archiver.simulator.config import SimulatorConfig
from archiver.simulator.control import control_routes
from archiver.simulator.faults import fault_middleware
from archiver.simulator.files import file_app
from archiver.simulator.state import SimState
from archiver.simulator.webhooks import WebhookSender

# Stalled handlers (fault_stall) must not hold up shutdown.
SHUTDOWN_GRACE: Final = 0.5
LIVE_TICK: Final = 0.02


class Simulator:
    """The Zoom Phone SMS simulator; see the package docstring for what it serves."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self._state = SimState(config or SimulatorConfig())
        self._runners: list[web.AppRunner] = []
        self._live_task: asyncio.Task[None] | None = None
        self._switched = asyncio.Event()
        self.webhooks = WebhookSender(self._state)
        self._state.on_message = self.webhooks.message_added
        self.api_url = self.oauth_url = self.file_url = self.control_url = ""

    @property
    def config(self) -> SimulatorConfig:
        """The configuration now in force (switches included)."""
        return self._state.config

    @property
    def account_id(self) -> str:
        return self.config.account_id

    @property
    def client_id(self) -> str:
        return self.config.client_id

    @property
    def client_secret(self) -> str:
        return self.config.client_secret

    async def __aenter__(self) -> Simulator:
        config = self.config
        api_sock = _listen(config.host, config.port)
        file_sock = _listen(config.host, config.file_port)
        try:
            base, self.file_url = _url(api_sock), _url(file_sock)
            self.api_url, self.oauth_url = f"{base}/v2", f"{base}/oauth/token"
            self.control_url = f"{base}/_sim"
            await asyncio.to_thread(self._state.build, base, self.file_url)
            api = web.Application(
                middlewares=[fault_middleware(self._state, streamed=frozenset(), count=True)]
            )
            api.add_routes(api_routes(self._state))
            api.add_routes(control_routes(self))
            for app, sock in ((api, api_sock), (file_app(self._state), file_sock)):
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
                await runner.setup()
                self._runners.append(runner)
                await web.SockSite(runner, sock).start()
            await self.webhooks.start()
        except BaseException:
            await self._stop()
            api_sock.close()
            file_sock.close()
            raise
        self._live_task = asyncio.create_task(self._live(), name="simulator-live-traffic")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._live_task is not None:
            self._live_task.cancel()
            # wait() rather than await: the task's cancellation is expected, ours is not.
            await asyncio.wait([self._live_task])
            self._live_task = None
        await self.webhooks.stop()
        while self._runners:
            await self._runners.pop().cleanup()

    async def _live(self) -> None:
        owed = 0.0
        last = time.monotonic()
        while True:
            rate = self.config.live_rate
            if rate <= 0:
                self._switched.clear()
                await self._switched.wait()
                last = time.monotonic()
                continue
            await asyncio.sleep(max(1.0 / rate, LIVE_TICK))
            now = time.monotonic()
            owed += (now - last) * self.config.live_rate
            last = now
            due = int(owed)
            owed -= due
            self._state.add_live(due)

    # --- controls (also served under /_sim) ---

    def set_switches(self, **changes: Any) -> dict[str, Any]:
        """Change run-time switches (quirks, faults, limits, lifetimes, live_rate...)."""
        switches = self._state.set_switches(**changes)
        self._switched.set()
        return switches

    def add_messages(
        self,
        n: int,
        session_id: str | None = None,
        new_session: bool = False,
        attachments: int | None = 0,
    ) -> list[dict[str, Any]]:
        """Add `n` messages stamped now, each with `attachments` files (0..10; None: an MMS
        by `attachment_probability`, as live traffic).

        No `session_id`: each goes to a random existing session; `new_session=True`: all go
        to one new session. Returns their ground-truth lines (`"kind": "message"`). Raises
        KeyError for an unknown or deleted session.
        """
        return self._state.add_messages(n, session_id, new_session, attachments)

    def delete_session(self, session_id: str) -> None:
        """The session answers 404 (12004) from now on; the truth marks it deleted."""
        if not self._state.delete_session(session_id):
            raise KeyError(session_id)

    def revoke_tokens(self) -> int:
        """Every access token issued so far stops working (401, code 124)."""
        return self._state.revoke_tokens()

    async def validate_webhook(self) -> bool:
        """Zoom's URL validation handshake against `webhook_url`: True if answered right."""
        return await self.webhooks.validate()

    def webhook_event(self, session_id: str, message_id: str) -> bytes:
        """The body of the event Zoom would post for this message (unsigned), e.g. to send it
        by hand; KeyError for an unknown session or message."""
        session = self._state.by_id[session_id]
        return self.webhooks.event_body(session, session.by_id[message_id])

    async def drain_webhooks(self) -> None:
        """Wait until every event is delivered or given up (bound it with asyncio.timeout)."""
        await self.webhooks.drain()

    def ground_truth(self) -> Iterator[dict[str, Any]]:
        """One dict per message and per distinct attachment; see the package docstring."""
        return self._state.ground_truth()

    def truth_lines(self) -> Iterator[bytes]:
        return self._state.truth_lines()

    def stats(self) -> dict[str, Any]:
        """Requests and 429s per label and endpoint, statuses, downloads, tokens issued."""
        return self._state.stats.as_dict()

    @property
    def session_ids(self) -> list[str]:
        """Ids of the sessions that exist now (deleted ones excluded), in creation order."""
        return [s.session_id for s in self._state.sessions if not s.deleted]


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
