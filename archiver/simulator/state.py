"""The simulator's state: the account, credentials, counters, and the operations on them.

One `SimState` is shared by the API, the file host and the control endpoints; it runs on one
event loop, so none of it needs locks. Three RNGs keep concerns apart: the data RNG (used once,
at build), the live RNG (messages added while running) and the fault RNG (faults, token
messages), so switching faults on never changes the data.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from archiver.simulator.auth import AccessTokens, Expiry, FileTokens
from archiver.simulator.config import SimulatorConfig
from archiver.simulator.content import Content
from archiver.simulator.generate import Generator, seeded
from archiver.simulator.model import (
    Attachment,
    Message,
    Session,
    dumps,
    encode_message,
    encode_session,
    truth_record,
)
from archiver.simulator.ratelimit import RateLimiter
from archiver.simulator.stats import Stats


class SimState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.limiter = RateLimiter()
        self.tokens = AccessTokens()
        self.file_tokens = FileTokens(config.jwt_secret)
        self.content = Content(config.seed)
        self.fault_rng = seeded(config.seed, "faults")
        self.sessions: list[Session] = []  # index == Session.seq
        self.by_id: dict[str, Session] = {}
        self.attachments: dict[str, tuple[Attachment, Session]] = {}
        self.sync_tokens: dict[str, float] = {}  # token -> monotonic issue time (token_expiry)
        self.base_url = ""
        self.file_url = ""
        self._live: Generator | None = None
        # Called for each message added while running (the webhook sender's events).
        self.on_message: Callable[[Session, Message], None] | None = None

    def build(self, base_url: str, file_url: str) -> None:
        """Generate, size, hash and encode the account (CPU only: runs in a worker thread)."""
        self.base_url, self.file_url = base_url, file_url
        cfg = self.config
        generator = Generator(cfg, seeded(cfg.seed, "data"))
        sessions = generator.account()
        distinct = list(
            {a.id: a for s in sessions for m in s.messages for a in m.attachments}.values()
        )
        # Its own RNG, so asking for large files leaves every other byte of the data alone.
        for att in seeded(cfg.seed, "large").sample(
            distinct, min(cfg.large_attachments, len(distinct))
        ):
            att.size = cfg.large_attachment_bytes
        self.content.fill_digests(distinct)
        for session in sessions:
            self._register(session)
        self._live = generator.fork(seeded(cfg.seed, "live"))

    def _register(self, session: Session) -> None:
        encode_session(session)
        self.sessions.append(session)
        self.by_id[session.session_id] = session
        for message in session.messages:
            self._encode(session, message)

    def _encode(self, session: Session, message: Message) -> None:
        """Encode `message` and index it; a session's messages are encoded in their order."""
        encode_message(message, self.file_url)
        if message.attachments:
            session.with_attachments.append(len(session.encoded))
        session.encoded.append(message.pieces[0] if len(message.pieces) == 1 else b"")
        for att in message.attachments:
            self.attachments.setdefault(att.id, (att, session))

    # --- serving ---

    def expiry(self) -> Expiry:
        return Expiry.at(self.config.jwt_lifetime)

    def message_bytes(self, message: Message, expiry: Expiry) -> bytes:
        """The message as the API returns it, with download URLs `expiry` accepts."""
        if len(message.pieces) == 1:
            return message.pieces[0]
        if not expiry.accepts(*message.cached_exps):
            parts = [message.pieces[0]]
            exps = []
            for att, piece in zip(message.attachments, message.pieces[1:], strict=True):
                exp, token = self.file_tokens.token(att, expiry)
                parts += (b"?jwt=", token.encode(), piece)
                exps.append(exp)
            message.cached, message.cached_exps = b"".join(parts), (min(exps), max(exps))
        return message.cached

    def page_body(self, session: Session, page: list[int], expiry: Expiry) -> bytes:
        """The comma-joined API bytes of `session.messages[i] for i in page`.

        Sync pages always lie within one contiguous range of indices, so only the messages
        with attachments inside that range need their URLs checked; the rest is a join.
        """
        if not page:
            return b""
        encoded, marks = session.encoded, session.with_attachments
        low, high = bisect.bisect_left(marks, min(page)), bisect.bisect_right(marks, max(page))
        messages, oldest, new = session.messages, expiry.oldest, expiry.new
        for index in marks[low:high]:
            message = messages[index]
            earliest, latest = message.cached_exps
            if earliest < oldest or latest > new:  # Expiry.accepts, inlined: the sync hot path
                self.message_bytes(message, expiry)
            encoded[index] = message.cached
        return b",".join([encoded[index] for index in page])

    def short_page(self, sync_type: str, count: int) -> int | None:
        """The length a page is cut to (1..count-1), or None for a whole page."""
        chance = (
            self.config.short_isync_probability
            if sync_type == "ISync"
            else self.config.short_page_probability
        )
        if count < 2 or not chance or self.fault_rng.random() >= chance:
            return None  # no draw when the switch is off: other faults keep their sequence
        return self.fault_rng.randint(1, count - 1)

    def drop_token(self) -> bool:
        """Whether a non-empty sync page goes out without its sync_token."""
        chance = self.config.no_token_probability
        return bool(chance) and self.fault_rng.random() < chance

    def remember_sync_token(self, token: str, now: float) -> None:
        expiry = self.config.token_expiry
        if expiry is None:
            return
        if len(self.sync_tokens) > 100_000:
            self.sync_tokens = {t: at for t, at in self.sync_tokens.items() if now - at < expiry}
        self.sync_tokens[token] = now

    def sync_token_expired(self, token: str, now: float) -> bool:
        # Measured from issue, not from last use: a walk that idles between its turns finds
        # its cursor refused, however often it used it before. With expiry on, a token we did
        # not issue (or issued before it was on) is expired. Tokens are the window's bytes, so
        # a token issued again (an empty ISync) is a new token with a new clock.
        expiry = self.config.token_expiry
        if expiry is None:
            return False
        issued = self.sync_tokens.get(token)
        return issued is None or now - issued > expiry

    # --- control ---

    def set_switches(self, **changes: Any) -> dict[str, Any]:
        self.config = self.config.with_switches(**changes)
        return self.config.switches()

    def add_messages(
        self,
        n: int,
        session_id: str | None = None,
        new_session: bool = False,
        attachments: int | None = 0,
    ) -> list[dict[str, Any]]:
        """Add `n` messages stamped now; each with `attachments` files (None = at random).

        Without `session_id` each message goes to a random live session; `new_session` puts
        them all in one new session. Returns their ground-truth lines ("kind": "message").
        """
        live = self._live
        assert live is not None, "add_messages needs a started simulator"
        live.config = self.config
        if attachments is not None and not 0 <= attachments <= 10:
            raise ValueError("attachments must be between 0 and 10")
        if n <= 0:
            return []
        active = [s for s in self.sessions if not s.deleted]
        if new_session or (session_id is None and not active):
            session = live.session(len(self.sessions))
            encode_session(session)
            self.sessions.append(session)
            self.by_id[session.session_id] = session
            targets = [session] * n
        elif session_id is not None:
            session = self.by_id[session_id]
            if session.deleted:
                raise KeyError(session_id)
            targets = [session] * n
        else:
            targets = [live.rng.choice(active) for _ in range(n)]
        added: list[tuple[Session, Message]] = []
        for session in targets:
            ms = max(int(time.time() * 1000), session.last_ms + 1)
            message = live.message(session, ms, attachments)
            self.content.fill_digests(a for a in message.attachments if not a.sha256)
            session.append(message)
            self._encode(session, message)
            added.append((session, message))
            if self.on_message is not None:
                self.on_message(session, message)
        return [json.loads(self._message_line(s, m)) for s, m in added]

    def add_live(self, n: int) -> None:
        """Live traffic: mostly existing sessions, sometimes a new one."""
        assert self._live is not None
        for _ in range(n):
            fresh = self._live.rng.random() < 0.05
            self.add_messages(1, new_session=fresh, attachments=None)

    def delete_session(self, session_id: str) -> bool:
        session = self.by_id.get(session_id)
        if session is None or session.deleted:
            return False
        session.deleted = True
        return True

    def revoke_tokens(self) -> int:
        return self.tokens.revoke()

    # --- ground truth ---

    def truth_lines(self) -> Iterator[bytes]:
        """NDJSON lines: each message, then each attachment the first time it appears.

        A snapshot of what exists now; a deleted session's lines carry `"deleted": true`.
        """
        snapshot = [(s, len(s.messages)) for s in self.sessions]
        for session, count in snapshot:
            seen: set[str] = set()
            for message in session.messages[:count]:
                yield self._message_line(session, message)
                for att in message.attachments:
                    if att.id in seen:
                        continue
                    seen.add(att.id)
                    line: dict[str, Any] = {
                        "kind": "attachment",
                        "session_id": session.session_id,
                        "message_id": message.message_id,
                        "attachment_id": att.id,
                        "size": att.size,
                        "sha256": att.sha256,
                    }
                    if session.deleted:
                        line["deleted"] = True
                    yield dumps(line) + b"\n"

    @staticmethod
    def _message_line(session: Session, message: Message) -> bytes:
        return b"".join(
            (
                b'{"kind":"message","session_id":',
                dumps(session.session_id),
                b',"message_id":',
                dumps(message.message_id),
                b',"record":',
                truth_record(message),
                b',"deleted":true}\n' if session.deleted else b"}\n",
            )
        )

    def ground_truth(self) -> Iterator[dict[str, Any]]:
        return (json.loads(line) for line in self.truth_lines())
