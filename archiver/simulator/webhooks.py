"""Zoom's webhook side: SMS events, signed and posted as messages arrive, retried on failure.

- Events: a message added while the simulator runs (`add_messages`, live traffic) is posted to
  `webhook_url` as `phone.sms_received` (direction In), `phone.sms_sent_failed` (delivery
  status failed_to_send) or `phone.sms_sent`, in the shape of Zoom's webhook schema
  (phone-sms-webhooks-openapi.json): `payload.account_id` and `payload.object` with
  `session_id`, the session `owner`, members as `{phone_number, display_name, id, type}`,
  attachment types in lower case and fresh `download_url`s. Zoom does not document how its
  event members relate to the API's; the model here is that the event names the member the API
  names, with the API's `owner.id`/`owner.type` as its `id`/`type`.
- Signing (zoom/README.md): `x-zm-request-timestamp` (Unix seconds) and `x-zm-signature` =
  `v0=` + hex HMAC-SHA256(webhook_secret, "v0:{timestamp}:{body}"). Every attempt is a new
  request: same body, fresh timestamp and signature.
- Delivery: a 200 or 204 within `webhook_timeout` (Zoom: 3 s) delivers the event. Anything else
  (another status, a timeout, a refused connection) fails the attempt; retry n goes out
  `webhook_retry_schedule[n]` seconds after the first attempt (Zoom: 5, 20, 60 minutes; tests
  shorten it), and after the last retry the event is given up, as Zoom gives up.
- URL validation: `validate()` posts a signed `endpoint.url_validation` with a random
  `plainToken` and checks the answer's `encryptedToken` (hex HMAC-SHA256 of the token).
  Delivery does not wait for it: Zoom validates when the URL is saved and every 72 hours,
  which tests do by calling it.

Only messages added after start produce events: the generated history predates the app's
subscription, as it would for an archiver installed on an existing account.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from archiver.simulator.config import retry_delays
from archiver.simulator.model import Message, Session, dumps
from archiver.simulator.state import SimState

WORKERS: Final = 16  # requests in flight at once
DELIVERED: Final = frozenset({200, 204})
FAILURE_REASON: Final = "1101-phone message error send"  # Zoom's example
USER_AGENT: Final = "Zoom Marketplace/1.0a"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `x-zm-signature` header of `body` sent at `timestamp`."""
    message = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def encrypted_token(secret: str, plain_token: str) -> str:
    return hmac.new(secret.encode(), plain_token.encode(), hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "x-zm-request-timestamp": stamp,
        "x-zm-signature": sign(secret, stamp, body),
    }


def event_name(record: dict[str, Any]) -> str:
    if record["direction"] == "In":
        return "phone.sms_received"
    if record.get("delivery_status") == "failed_to_send":
        return "phone.sms_sent_failed"
    return "phone.sms_sent"


def webhook_object(record: dict[str, Any], session: Session) -> dict[str, Any]:
    """`payload.object` for the message `record` (as the API returns it) of `session`."""
    received = record["direction"] == "In"
    owner_number = session.owner["phone_number"]
    to_members = []
    for member in record["to_members"]:
        item = _member(member)
        if received:
            item["is_message_owner"] = member["phone_number"] == owner_number
        to_members.append(item)
    obj: dict[str, Any] = {
        "session_id": session.session_id,
        "message_id": record["message_id"],
        "date_time": record["date_time"],
        "message": record["message"],
        "message_type": record["message_type"],
        "sender": _member(record["sender"]),
        "to_members": to_members,
        "owner": {"type": session.owner["owner"]["type"], "id": session.owner["owner"]["id"]},
        "attachments": [
            {
                "id": att["id"],
                "size": att["size"],
                "name": att["name"],
                "type": att["type"].lower(),
                "download_url": att["download_url"],
            }
            for att in record.get("attachments", [])
        ],
    }
    if event_name(record) == "phone.sms_sent_failed":
        obj["failure_reason"] = FAILURE_REASON
    return obj


def _member(member: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"phone_number": member["phone_number"]}
    if "display_name" in member:
        item["display_name"] = member["display_name"]
    owner = member.get("owner")
    if owner:
        item["id"], item["type"] = owner["id"], owner["type"]
    return item


@dataclass(eq=False)
class Delivery:
    session_id: str
    message_id: str
    body: bytes
    added_at: float  # wall clock, when the message was added
    first_attempt: float | None = None  # monotonic
    attempts: int = 0
    retry: asyncio.TimerHandle | None = None


class WebhookSender:
    """Posts events for `state`'s new messages to `webhook_url`; see the module docstring."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._waiting: set[Delivery] = set()  # failed, a retry scheduled
        self._busy = 0
        self._http: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._settled = asyncio.Event()
        # Called with each delivered event (benchmarks: creation-to-acknowledged latency).
        self.on_delivered: Callable[[Delivery], None] | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=WORKERS), trust_env=False
        )
        self._workers = [
            asyncio.create_task(self._worker(), name=f"simulator-webhook-{n}")
            for n in range(WORKERS)
        ]

    async def stop(self) -> None:
        for delivery in self._waiting:
            if delivery.retry is not None:
                delivery.retry.cancel()
        self._waiting.clear()
        for task in self._workers:
            task.cancel()
        if self._workers:
            await asyncio.wait(self._workers)
        self._workers = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- events ---

    def message_added(self, session: Session, message: Message) -> None:
        """SimState's hook: queue the event of a message just added (if webhooks are on)."""
        if not self._state.config.webhook_url:
            return
        now = time.time()
        body = self.event_body(session, message, now)
        self._state.stats.webhook_events += 1
        self._settled.clear()
        self._queue.put_nowait(Delivery(session.session_id, message.message_id, body, now))

    def event_body(self, session: Session, message: Message, now: float | None = None) -> bytes:
        """The JSON body of `message`'s event, with download URLs valid from now."""
        record = json.loads(self._state.message_bytes(message, self._state.expiry()))
        event = {
            "event": event_name(record),
            "event_ts": int((time.time() if now is None else now) * 1000),
            "payload": {
                "account_id": self._state.config.account_id,
                "object": webhook_object(record, session),
            },
        }
        return dumps(event)

    def idle(self) -> bool:
        """No event queued, in flight or waiting for a retry."""
        return self._queue.empty() and not self._busy and not self._waiting

    async def drain(self) -> None:
        """Wait until `idle()`: every event delivered or given up."""
        while not self.idle():
            self._settled.clear()
            await self._settled.wait()

    async def validate(self) -> bool:
        """Zoom's URL validation handshake against `webhook_url`; True if answered right."""
        config = self._state.config
        token = secrets.token_urlsafe(16)
        body = dumps(
            {
                "event": "endpoint.url_validation",
                "event_ts": int(time.time() * 1000),
                "payload": {"plainToken": token},
            }
        )
        answer: Any = None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            status, raw = await self._post(config.webhook_url, body)
            answer = json.loads(raw) if status == 200 else None
        valid = isinstance(answer, dict) and answer == {
            "plainToken": token,
            "encryptedToken": encrypted_token(config.webhook_secret, token),
        }
        self._state.stats.webhook_validations["ok" if valid else "failed"] += 1
        return valid

    # --- delivery ---

    async def _worker(self) -> None:
        while True:
            delivery = await self._queue.get()
            self._busy += 1
            try:
                delivered = await self._attempt(delivery)
            finally:
                self._busy -= 1
            if delivered:
                self._state.stats.webhook_delivered += 1
                if self.on_delivered is not None:
                    self.on_delivered(delivery)
            else:
                self._retry_later(delivery)
            if self.idle():
                self._settled.set()

    async def _attempt(self, delivery: Delivery) -> bool:
        if delivery.first_attempt is None:
            delivery.first_attempt = time.monotonic()
        delivery.attempts += 1
        self._state.stats.webhook_attempts += 1
        url = self._state.config.webhook_url
        if not url:
            return False
        try:
            status, _ = await self._post(url, delivery.body)
        except (aiohttp.ClientError, TimeoutError):
            return False
        return status in DELIVERED

    async def _post(self, url: str, body: bytes) -> tuple[int, bytes]:
        assert self._http is not None, "the sender is not started"
        config = self._state.config
        async with self._http.post(
            url,
            data=body,
            headers=signed_headers(config.webhook_secret, body),
            timeout=aiohttp.ClientTimeout(total=config.webhook_timeout),
        ) as response:
            return response.status, await response.read()

    def _retry_later(self, delivery: Delivery) -> None:
        delays = retry_delays(self._state.config.webhook_retry_schedule)
        if delivery.attempts > len(delays):
            self._state.stats.webhook_given_up += 1
            return
        assert delivery.first_attempt is not None
        due = delivery.first_attempt + delays[delivery.attempts - 1]
        self._waiting.add(delivery)
        delivery.retry = asyncio.get_running_loop().call_later(
            max(0.0, due - time.monotonic()), self._requeue, delivery
        )

    def _requeue(self, delivery: Delivery) -> None:
        self._waiting.discard(delivery)
        delivery.retry = None
        self._state.stats.webhook_retries += 1
        self._queue.put_nowait(delivery)
