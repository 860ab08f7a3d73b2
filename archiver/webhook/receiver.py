"""The webhook receiver: verify, archive durably, answer Zoom within its 3 seconds.

Durability before the 200. The handler awaits `ManifestWriter.append_messages` itself, so the
200 is sent only after the message line is fsynced. The writer's group commit makes that one
fsync shared by every request in flight (a few milliseconds), and the await is bounded by
`ARCHIVE_TIMEOUT`, well under Zoom's 3 s: a slow or stopped writer gets a 503, and Zoom sends
the event again later. So no event can be acknowledged and then lost: either the line is on
disk before the 200, or Zoom did not get a 200 and retries (5, 20, 60 minutes), and in any case
the poller finds the message on its own. A 503 whose write completes after all is harmless:
the retry finds the message archived and writes no second line, and the attachments the line
lists are already pending in the ledger (indexed with the line), where the download manager's
periodic reload of pending jobs finds them. No separate spool (a state-store queue) is needed,
because nothing is acknowledged before the manifest has it.

What the handler does, in order (each step may answer and stop):
1. `Content-Length` above `max_body_bytes`: 413 before reading; a chunked body is cut off at
   the same size by aiohttp's `client_max_size` (413 too).
2. Signature headers missing or malformed (`header_refusal`), or a timestamp outside the
   tolerance (`clock_refusal`): 401 before a byte of the body is read. Headers of the right
   shape can be forged without the secret, so the body is read under the guard's rules
   (`serving.read_body`): `WEBHOOK_LIMITS.body_timeout` to arrive (else 408), a share of the
   body budget for all requests together (the slowest body is pushed out to make room, else
   503 `no_room`: Zoom retries), and the connection evictable while it arrives. Then the
   signature and timestamp are checked over the body (`verify.check_request`): 401.
   Refusals are counted exactly (metrics: `zsa_webhook_refused`) but logged only a few per
   minute (`serving.Sampler`), with the reason, the peer and the length, never the body or
   the headers: a flood of unsigned requests must not drown the daemon's real errors in
   journald's rate limit.
3. The exact request answered before (same signature): 200, nothing done.
4. `endpoint.url_validation`: the plainToken / encryptedToken answer. Only once signed, as
   Zoom signs it: answering an unsigned challenge would be an HMAC oracle (send
   "v0:{ts}:{any body}" as the plainToken, get back a valid signature for it).
5. `payload.account_id` not ours: 403 (the app may be installed on several accounts; this
   daemon archives one).
6. Not an SMS message event (etiquette, campaign opt-in...): 200, ignored.
7. The event's `payload.object` as received (`records`; the writer strips every jwt), with
   `source: "webhook"`, unless the archive already holds some version of the message: the
   API's version is authoritative and a late retry must not supersede it. The check and the
   write are one turn of the session (`gate.SessionGate`), so a sync page committed in between
   cannot be superseded either. When the sync API later returns the message, its record is a
   second version of the same message (a `supersedes` line), never a second message.
8. After the 200-to-be is earned: the attachments go to the download queue with the event's
   fresh URLs (in the background: the download manager may hold a caller for backpressure,
   and the ledger already lists them, so a crash loses no attachment), and the session is
   queued for an incremental sync that confirms the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web

from archiver.config import Config, Secret, WebhookConfig, parse_listen
from archiver.errors import ConfigError, StorageError
from archiver.ops import serving
from archiver.ops.logs import get_logger, register_secret
from archiver.store.writer import AppendResult
from archiver.webhook.records import MESSAGE_EVENTS, EventError, event_message
from archiver.webhook.verify import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayMemory,
    check_request,
    clock_refusal,
    header_refusal,
    url_validation_answer,
)
from archiver.zoom.models import JsonObject

if TYPE_CHECKING:
    from archiver.downloads.manager import DownloadManager
    from archiver.store.state import State
    from archiver.sync.supervisor import Supervisor
    from archiver.webhook.gate import SessionGate

# Zoom waits 3 s for an answer; leave room for the network and the reverse proxy.
ARCHIVE_TIMEOUT: Final = 2.0
# On shutdown, requests in flight get this long to finish (their writes are bounded above).
SHUTDOWN_GRACE: Final = ARCHIVE_TIMEOUT + 0.5
VALIDATION_EVENT: Final = "endpoint.url_validation"
SOURCE: Final = "webhook"

OnArchived = Callable[[str, list[JsonObject]], Awaitable[None]]


class Archive(Protocol):
    """What the receiver writes through: `gate.SessionGate` in the daemon."""

    async def append_if_new(
        self,
        session_id: str,
        record: Mapping[str, Any],
        source: str,
        archived: Callable[[str, str], bool],
    ) -> AppendResult | None: ...


@dataclass
class WebhookStats:
    """Counters for tests, metrics and the log."""

    requests: int = 0
    archived: int = 0  # messages that got a line
    known: int = 0  # messages the archive already held: no line
    replays: int = 0
    ignored: int = 0  # signed events that are not SMS messages
    validations: int = 0
    failed: int = 0  # answered 503: the writer was slow or has stopped
    refused: Counter[str] = field(default_factory=Counter)  # reason -> requests


class WebhookReceiver:
    """The aiohttp application behind `webhook.path`; see the module docstring."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        account_id: str,
        secret: Secret,
        archive: Archive,
        has_message: Callable[[str, str], bool],
        on_archived: OnArchived,
        mark_session: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        register_secret(secret.reveal())
        self._config = config
        self._account_id = account_id
        self._key = secret.reveal().encode("utf-8")
        self._archive = archive
        self._has_message = has_message
        self._on_archived = on_archived
        self._mark_session = mark_session
        self._clock = clock
        self._replays = ReplayMemory(config.timestamp_tolerance)
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = get_logger(component="webhook")
        self._refusal_log = serving.Sampler()
        self.stats = WebhookStats()

    def app(self) -> web.Application:
        app = serving.guarded_app(
            "webhook", serving.WEBHOOK_LIMITS, client_max_size=self._config.max_body_bytes
        )
        app.router.add_post(self._config.path, self.handle)
        return app

    async def close(self) -> None:
        """Stop the background attachment hand-offs (the ledger keeps their jobs)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    # --- the handler ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:  # noqa: PLR0911 - a step each
        self.stats.requests += 1
        length = request.content_length
        if length is not None and length > self._config.max_body_bytes:
            return self._refuse(request, 413, "too_large")
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        provided = request.headers.get(SIGNATURE_HEADER)
        refusal = header_refusal(timestamp, provided)
        if refusal is None:
            assert timestamp is not None
            refusal = clock_refusal(
                timestamp, now=self._clock(), tolerance=self._config.timestamp_tolerance
            )
        if refusal is not None:
            return self._refuse(request, 401, refusal.value)
        try:
            body = await serving.read_body(
                request, serving.WEBHOOK_LIMITS, self._config.max_body_bytes
            )
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, "too_large")
        if isinstance(body, serving.NoBody):
            return self._refuse(request, body.status, body.reason)
        now = self._clock()
        refusal = check_request(
            self._key,
            timestamp,
            provided,
            body,
            now=now,
            tolerance=self._config.timestamp_tolerance,
        )
        if refusal is not None:
            return self._refuse(request, 401, refusal.value)
        assert timestamp is not None and provided is not None
        try:
            event = json.loads(body)
        except ValueError:  # also UnicodeDecodeError
            return self._refuse(request, 400, "not_json")
        name = event.get("event") if isinstance(event, dict) else None
        payload = event.get("payload") if isinstance(event, dict) else None
        if not isinstance(name, str) or not isinstance(payload, dict):
            return self._refuse(request, 400, "not_an_event")
        if name == VALIDATION_EVENT:
            # Answered every time: it is cheap, changes nothing, and Zoom expects the answer.
            return self._validate(request, payload)
        if self._replays.seen(provided, now):
            self.stats.replays += 1
            return _answer("duplicate")
        response = await self._event(request, name, payload)
        if response.status == 200:
            self._replays.remember(provided, float(timestamp), now)
        return response

    def _validate(self, request: web.Request, payload: dict[str, Any]) -> web.Response:
        token = payload.get("plainToken")
        if not isinstance(token, str) or not token:
            return self._refuse(request, 400, "no_plain_token", event_name=VALIDATION_EVENT)
        self.stats.validations += 1
        self._log.info("webhook_url_validated")
        return web.json_response(url_validation_answer(self._key, token))

    async def _event(
        self, request: web.Request, name: str, payload: dict[str, Any]
    ) -> web.Response:
        if payload.get("account_id") != self._account_id:
            return self._refuse(request, 403, "other_account", event_name=name)
        if name not in MESSAGE_EVENTS:
            self.stats.ignored += 1
            self._log.debug("webhook_event_ignored", event_name=name)
            return _answer("ignored")
        try:
            session_id, record = event_message(name, payload)
        except EventError as exc:
            return self._refuse(request, 400, "bad_event", event_name=name, problem=str(exc))
        return await self._store(session_id, record)

    async def _store(self, session_id: str, record: JsonObject) -> web.Response:
        log = self._log.bind(session_id=session_id, message_id=record["message_id"])
        try:
            # Checked and written in one turn of the session (see gate.py): a late event
            # never supersedes the version a sync wrote a moment ago.
            result = await asyncio.wait_for(
                self._archive.append_if_new(session_id, record, SOURCE, self._has_message),
                ARCHIVE_TIMEOUT,
            )
        except TimeoutError:
            self.stats.failed += 1
            log.warning("webhook_archive_slow", timeout=ARCHIVE_TIMEOUT)
            return _answer("try again later", 503)
        except (StorageError, RuntimeError) as exc:  # RuntimeError: the writer is closed
            self.stats.failed += 1
            log.error("webhook_archive_failed", error=str(exc))
            return _answer("try again later", 503)
        if result is None or not (result.new or result.changed):
            self.stats.known += 1  # a retry, or the poller was first
            return _answer("known")
        self.stats.archived += 1
        log.debug("webhook_message_archived", seq=result.seqs[-1])
        self._background(self._queue_attachments(session_id, record))
        self._mark_session(session_id)
        return _answer("archived")

    async def _queue_attachments(self, session_id: str, record: JsonObject) -> None:
        await self._on_archived(session_id, [record])

    def _refuse(
        self, request: web.Request, status: int, reason: str, **details: Any
    ) -> web.Response:
        self.stats.refused[reason] += 1
        log, suppressed = self._refusal_log.admit()
        if log:
            self._log.warning(
                "webhook_refused",
                status=status,
                reason=reason,
                remote=request.remote,
                content_length=request.content_length,
                suppressed=suppressed,  # refusals not logged since the last line
                **details,
            )
        response = _answer(reason, status)
        response.force_close()  # no keep-alive for a refused client
        return response

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="webhook-attachments")
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The jobs stay pending in the ledger (indexed with the line, so nothing is lost):
            # the download manager reloads pending ledger jobs periodically and at the end of a
            # pass, and fetches them then, with a URL refreshed from the message endpoint.
            self._log.error("webhook_attachments_not_queued", error=repr(task.exception()))


def _answer(status_text: str, status: int = 200) -> web.Response:
    return web.json_response({"status": status_text}, status=status)


# --- in the daemon ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_webhooks(
    config: Config,
    secret: Secret,
    *,
    archive: SessionGate,
    state: State,
    downloads: DownloadManager,
    supervisor: Supervisor,
) -> AsyncIterator[WebhookReceiver]:
    """Listen on `webhook.listen` while the context is open; stop taking requests on exit.

    `archive` must be the gate the sync path writes through too (see gate.py).
    """
    from archiver.sync.supervisor import INCREMENTAL

    receiver = WebhookReceiver(
        config.webhook,
        account_id=config.zoom.account_id,
        secret=secret,
        archive=archive,
        has_message=state.has_message,
        on_archived=downloads.on_archived,
        mark_session=lambda session_id: supervisor.enqueue(session_id, INCREMENTAL),
    )
    host, port = parse_listen(config.webhook.listen, "webhook.listen")
    try:
        runner, _site = await serving.start(
            receiver.app(), serving.WEBHOOK_LIMITS, host, port, shutdown_timeout=SHUTDOWN_GRACE
        )
    except OSError as exc:
        await receiver.close()
        raise ConfigError(
            f"cannot listen on {config.webhook.listen}: {exc.strerror or exc}",
            file=config.source,
            key="webhook.listen",
        ) from None
    try:
        get_logger(component="webhook").info(
            "webhook_listening", listen=config.webhook.listen, path=config.webhook.path
        )
        yield receiver
    finally:
        await runner.cleanup()
        await receiver.close()
