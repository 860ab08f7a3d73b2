"""An in-process model of any Zoom the documentation allows, on a virtual clock.

Written from `zoom/README.md` alone ("The sync model" and the list of what the docs leave
open), not from the simulator, so it can judge the archiver without sharing its habits.

- The clock is virtual: one tick (one second) per request, plus explicit `advance()` calls
  between passes. A sync token issued at tick t is refused (code 300) after t + L ticks.
- Every message has a hidden millisecond key (`ms`): its `date_time` second plus its rank
  within that second, so several messages may share a second while a token's window
  (`<id>_<older_ms>_<newer_ms>`, base64) still says exactly which of them it covers.
- Every behaviour the docs leave open is drawn per request from a stream seeded by
  (case seed, session, request number of that session), so one session's pages do not depend
  on how the archiver interleaves its other sessions.
- Requests that break a documented rule (count out of 1..250, a list window over a month,
  ISync without a token, ...) are answered with a 400 and recorded in `violations`.
"""

from __future__ import annotations

import base64
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

from tests.model.behaviour import Behaviour, Disconnected, Response, body, error, fault_answer

EPOCH = datetime(2025, 3, 10, tzinfo=UTC)  # tick 0 of the virtual clock
HISTORY_START = datetime(2025, 1, 1, tzinfo=UTC)  # the oldest message the model invents
LIST_PATH = "/phone/sms/sessions"
SESSION_TYPES = ("all", "user", "call_queue", "auto_receptionist", "service_endpoint")


@dataclass(frozen=True)
class Message:
    session_id: str
    message_id: str
    ms: int  # hidden total order: date_time second * 1000 + rank within the second
    record: dict[str, Any]
    visible_at: int = -(10**9)  # the tick from which Zoom's answers show it

    @property
    def date_time(self) -> str:
        return str(self.record["date_time"])


@dataclass
class _Session:
    session_id: str
    messages: list[Message] = field(default_factory=list)  # ascending by ms
    deleted: bool = False

    def visible(self, tick: int) -> list[Message]:
        return [m for m in self.messages if m.visible_at <= tick]

    def last_second(self, tick: int) -> datetime | None:
        shown = self.visible(tick)
        return _second(shown[-1].ms) if shown else None


@dataclass(frozen=True)
class _Token:
    session_id: str
    older: int  # the window covers older..newer (ms keys), and everything in between
    newer: int
    issued: int  # tick


def _second(ms: int) -> datetime:
    return EPOCH + timedelta(seconds=ms // 1000)


def zoom_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ZoomModel:
    def __init__(self, seed: int, behaviour: Behaviour) -> None:
        self.seed = seed
        self.behaviour = behaviour
        self.tick = 0
        self.faults_on = True  # faults and live arrivals; page shapes and expiry stay
        self.requests = 0
        self.violations: list[str] = []
        self.seen: Counter[str] = Counter()  # which behaviours fired, for coverage checks
        self.seen_by: dict[str, Counter[str]] = {}  # the same per session ("list": the list)
        self._current = "list"
        self.access_token: str | None = None
        self.sessions: dict[str, _Session] = {}  # in creation order: the list's order
        self._world = random.Random(f"{seed}/world")  # arrivals and deletions
        self.requests_by: Counter[str] = Counter()  # per session ("list": the list)
        self._tokens: dict[str, _Token] = {}
        self._serial = itertools.count(1)
        self._rank: Counter[int] = Counter()  # messages per second so far
        self._listings: dict[str, list[str]] = {}  # list cursor -> snapshot of session ids
        self._offsets: dict[str, int] = {}  # list cursor -> offset (offset_paging)

    # --- the clock and the world ----------------------------------------------------------

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.tick)

    def advance(self, seconds: int) -> None:
        self.tick += seconds

    def populate(self, sessions: int, messages: int) -> None:
        """History before tick 0: `messages` spread over `sessions`, some sharing a second."""
        span = int((EPOCH - HISTORY_START).total_seconds())
        ids = [self._new_session_id() for _ in range(sessions)]
        second = -span
        seconds: list[int] = []
        for _ in range(messages):
            if not seconds or self._world.random() > 0.3:  # else: the same second again
                second = self._world.randrange(-span, 0)
            seconds.append(second)
        for second in sorted(seconds):
            self._add(self._world.choice(ids), second)

    def burst(self, n: int, *, one_session: bool = False) -> list[Message]:
        """`n` messages now, into random sessions (sometimes a new one) or all into one;
        several share a second."""
        out = []
        alive = [s for s in self.sessions.values() if not s.deleted]
        target = self._world.choice(alive).session_id if one_session and alive else None
        for _ in range(n):
            alive = [s for s in self.sessions.values() if not s.deleted]
            if target is not None:
                session_id = target
            elif not alive or self._world.random() < 0.2:
                session_id = self._new_session_id()
            else:
                session_id = self._world.choice(alive).session_id
            out.append(self._add(session_id, self.tick, lag=self.behaviour.visible_lag))
            if self._world.random() < 0.3:
                self.tick += 1
        return out

    def delete_session(self) -> str | None:
        alive = [s for s in self.sessions.values() if not s.deleted]
        if not alive:
            return None
        victim = self._world.choice(alive)
        victim.deleted = True
        self.seen["deleted"] += 1
        return victim.session_id

    def truth(
        self, *, include_deleted: bool, visible: bool = False
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """(session_id, message_id) -> record, of every message Zoom holds (or ever held);
        `visible`: only those its answers show by now."""
        return {
            (m.session_id, m.message_id): m.record
            for s in self.sessions.values()
            if include_deleted or not s.deleted
            for m in s.messages
            if not visible or m.visible_at <= self.tick
        }

    def _new_session_id(self) -> str:
        session_id = f"sess{len(self.sessions):02d}x{self._world.randrange(16**6):06x}"
        self.sessions[session_id] = _Session(session_id)
        return session_id

    def _add(self, session_id: str, second: int, lag: int = 0) -> Message:
        rank = self._rank[second]
        assert rank < 1000, "more than 1000 messages in one second"
        self._rank[second] += 1
        ms = second * 1000 + rank
        session = self.sessions[session_id]
        n = sum(len(s.messages) for s in self.sessions.values())
        words = ("hello", "ok", "see you", "ünïcødé ✓", "line\nbreak", "", "call me")
        out = self._world.random() < 0.5
        message_id = f"m{n:04d}{self._world.randrange(16**4):04x}"  # unique: n counts them
        record: dict[str, Any] = {
            "message_id": message_id,
            "date_time": zoom_time(_second(ms)),
            "direction": "Out" if out else "In",
            "message": self._world.choice(words),
            "message_type": 1,
            "sender": {"phone_number": "+15550001" if out else "+15550002"},
            "to_members": [{"phone_number": "+15550002" if out else "+15550001"}],
        }
        message = Message(session_id, message_id, ms, record, second + lag)
        if lag:
            self._note("visible_lag")
        session.messages.append(message)
        session.messages.sort(key=lambda m: m.ms)
        return message

    # --- requests ---------------------------------------------------------------------------

    def issue_access_token(self) -> str:
        """The token endpoint: never refuses (the credentials are good in every case)."""
        if self.access_token is None:
            self.access_token = f"access-{next(self._serial)}"
            self.seen["access_token"] += 1
        return self.access_token

    def handle(self, path: str, params: dict[str, str], access_token: str | None) -> Response:
        status, headers, raw = self._handle(path, params, access_token)
        headers["Date"] = format_datetime(self.now(), usegmt=True)  # Zoom's clock
        return status, headers, raw

    def _handle(self, path: str, params: dict[str, str], access_token: str | None) -> Response:
        self.tick += 1
        self.requests += 1
        if self.faults_on and self._world.random() < self.behaviour.live_arrivals:
            self.seen["live_arrival"] += 1
            self.burst(1)
        if access_token is None or access_token != self.access_token:
            self.seen["401"] += 1
            return error(401, 124, "Invalid access token.")
        parts = [unquote(p) for p in path.split("/")]
        if path == LIST_PATH:
            stream, route = "list", "list"
        elif len(parts) == 6 and parts[:4] == ["", "phone", "sms", "sessions"]:
            stream, route = parts[4], parts[5]
        elif len(parts) == 7 and parts[5] == "messages":
            stream, route = parts[4], "message"
        else:
            return self._violation(f"unknown path {path}")
        self._current = stream
        rng = self._stream(stream)
        if self.faults_on and (fault := self._fault(rng)) is not None:
            return fault
        if route == "list":
            return self._list(params, rng)
        if route == "sync":
            return self._sync(stream, params, rng)
        if route == "message":
            return self._message(stream, parts[6])
        return self._violation(f"unknown path {path}")

    def _note(self, what: str) -> None:
        self.seen[what] += 1
        self.seen_by.setdefault(self._current, Counter())[what] += 1

    def _stream(self, name: str) -> random.Random:
        self.requests_by[name] += 1
        return random.Random(f"{self.seed}/{name}/{self.requests_by[name]}")

    def _violation(self, what: str) -> Response:
        self.violations.append(f"tick {self.tick}: {what}")
        return error(400, 400, f"Bad Request: {what}")

    def _fault(self, rng: random.Random) -> Response | None:
        draw = rng.random()
        for name, p in self.behaviour.faults.kinds():
            if draw >= p:
                draw -= p
                continue
            self._note(name)
            if name == "unauthorized":
                self.access_token = None  # revoked: every request fails until renewed
            if name == "reset":
                raise Disconnected("model: connection reset")
            return fault_answer(name, rng)
        return None

    # --- the session list ---------------------------------------------------------------------

    def _list(self, params: dict[str, str], rng: random.Random) -> Response:
        try:
            start = datetime.strptime(params["from"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            end = datetime.strptime(params["to"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            page_size = int(params.get("page_size", "30"))
        except (KeyError, ValueError):
            return self._violation(f"list parameters {params}")
        if not 1 <= page_size <= 100:
            return self._violation(f"list page_size {page_size}")
        if end < start or end - start > timedelta(days=31):
            return self._violation(f"list window {params['from']}..{params['to']} over a month")
        if params.get("session_type", "user") not in SESSION_TYPES:
            return self._violation(f"session_type {params.get('session_type')}")
        cursor = params.get("next_page_token")
        size = min(page_size, self.behaviour.list_page_size)
        if self.behaviour.offset_paging:
            # Offsets into the live list, newest first: a session that moves out of the
            # window while the caller pages shifts every later one up by one.
            offset = self._offsets.get(cursor, -1) if cursor else 0
            if offset < 0:
                return error(400, 400, "The next page token is invalid or expired.")
            ids = self._in_window(start, end)
            ids.sort(key=lambda sid: self.sessions[sid].last_second(self.tick) or start)
            ids.reverse()
            page, rest = ids[offset : offset + size], ids[offset + size :]
            next_token = ""
            if rest:
                next_token = f"off{next(self._serial)}x{rng.randrange(16**4):04x}"
                self._offsets[next_token] = offset + size
                self._note("offset_paging")
        else:
            if cursor:
                if cursor not in self._listings:
                    return error(400, 400, "The next page token is invalid or expired.")
                ids = self._listings[cursor]
            else:
                # The listing is a snapshot: a session whose last message moves on while the
                # caller pages must not shift the others out of it.
                ids = self._in_window(start, end)
            page, rest = ids[:size], ids[size:]
            next_token = ""
            if rest:
                next_token = f"list{next(self._serial)}x{rng.randrange(16**4):04x}"
                self._listings[next_token] = rest
        rows = []
        for session_id in page:
            last = self.sessions[session_id].last_second(self.tick)
            rows.append(
                {
                    "session_id": session_id,
                    "session_type": "user",
                    "last_access_time": zoom_time(last) if last else "",
                }
            )
        if rows and rng.random() < self.behaviour.duplicate:
            self._note("list_duplicate")
            rows.insert(rng.randrange(len(rows) + 1), dict(rng.choice(rows)))
        return body(200, {"next_page_token": next_token, "page_size": size, "sms_sessions": rows})

    def _in_window(self, start: datetime, end: datetime) -> list[str]:
        out = []
        for s in self.sessions.values():
            last = s.last_second(self.tick)
            if not s.deleted and last is not None and start <= last <= end:
                out.append(s.session_id)
        return out

    # --- sync -----------------------------------------------------------------------------------

    def _sync(self, session_id: str, params: dict[str, str], rng: random.Random) -> Response:
        try:
            count = int(params["count"])
        except (KeyError, ValueError):
            return self._violation(f"sync without a valid count: {params}")
        if not 1 <= count <= 250:
            return self._violation(f"sync count {count}")
        kind = params.get("sync_type")
        if kind not in ("FSync", "ISync", "BSync"):
            return self._violation(f"sync_type {kind!r}")
        session = self.sessions.get(session_id)
        if session is None or session.deleted:
            self._note("12004")
            return error(404, 12004, f"Session does not exist: {session_id}.")
        if kind == "FSync":
            return self._fsync(session, count, rng)
        raw = params.get("sync_token")
        if not raw:
            return self._violation(f"{kind} without sync_token")
        token = self._tokens.get(raw)
        lifetime = self.behaviour.token_lifetime
        if (
            token is None
            or token.session_id != session_id
            or (lifetime is not None and self.tick > token.issued + lifetime)
        ):
            self._note("300")
            status = 404 if rng.random() < 0.2 else 400  # Zoom documents both
            return error(status, 300, "The sync token is invalid or expired.")
        if kind == "ISync":
            return self._isync(session, token, count, rng)
        return self._bsync(session, token, count, rng)

    def _fsync(self, session: _Session, count: int, rng: random.Random) -> Response:
        slots, dup = self._slots(count, rng)
        shown = session.visible(self.tick)
        page = shown[len(shown) - self._take(slots, shown, rng) :]
        # Nothing yet: a window just below anything that can arrive from now on.
        empty = self.tick * 1000 - 1
        window = (page[0].ms, page[-1].ms) if page else (empty, empty)
        return self._page(session, page, window, dup, rng, newest_first=True)

    def _bsync(self, session: _Session, token: _Token, count: int, rng: random.Random) -> Response:
        shown = session.visible(self.tick)
        older = [m for m in shown if m.ms < token.older]
        covered = [m for m in shown if m.ms == token.older]
        slots, dup = self._slots(count, rng)
        overlap: list[Message] = []
        if covered and rng.random() < self.behaviour.overlap:
            # The oldest message the token covers, again, in a slot of its own.
            overlap, slots = covered, slots - 1
            self._note("overlap")
            if dup and slots < 1:
                dup, slots = False, slots + 1
        fresh = older[len(older) - self._take(slots, older, rng) :]
        window = (fresh[0].ms if fresh else token.older, token.newer)
        if not fresh:
            self._note("bsync_empty" if not overlap else "bsync_only_overlap")
        return self._page(session, fresh + overlap, window, dup, rng, newest_first=True)

    def _isync(self, session: _Session, token: _Token, count: int, rng: random.Random) -> Response:
        shown = session.visible(self.tick)
        new = [m for m in shown if m.ms > token.newer]
        if len(new) > count:
            self._note("7035")
            return error(400, 7035, "The number of new records exceeds the sync count.")
        covered = [m for m in shown if m.ms == token.newer]
        slots, dup = self._slots(count, rng)
        head: list[Message] = []
        if covered and rng.random() < self.behaviour.boundary:
            head = covered
            slots -= 1
            self._note("boundary")
            if len(new) > slots:
                self._note("boundary_hides_newest")
        if dup and slots < 1:
            dup, slots = False, slots + 1  # no room for a copy: keep the slot
        fresh = new[: max(slots, 0)]
        if len(fresh) > 1 and rng.random() < self.behaviour.short_isync:
            # `count` is "the number of records returned within a single API call": no more.
            self._note("short_isync")
            fresh = fresh[: rng.randint(1, len(fresh) - 1)]
        page = head + fresh
        window = (token.older, max([token.newer, *(m.ms for m in page)]))
        return self._page(session, page, window, dup, rng, newest_first=False)

    def _slots(self, count: int, rng: random.Random) -> tuple[int, bool]:
        """(slots for distinct messages, whether a duplicate takes one more)."""
        if count >= 2 and rng.random() < self.behaviour.duplicate:
            return count - 1, True
        return count, False

    def _take(self, slots: int, available: list[Message], rng: random.Random) -> int:
        take = min(slots, len(available))
        if take > 1 and rng.random() < self.behaviour.short_page:
            self._note("short_page")
            return rng.randint(1, take - 1)
        return take

    def _page(
        self,
        session: _Session,
        page: list[Message],
        window: tuple[int, int],
        dup: bool,
        rng: random.Random,
        *,
        newest_first: bool,
    ) -> Response:
        records = [m.record for m in page]
        if dup and records:
            self._note("duplicate")
            records.insert(rng.randrange(len(records) + 1), rng.choice(records))
        order = self.behaviour.order
        if order == "mixed":
            order = rng.choice(("asc", "desc"))
        if (order == "desc") != newest_first:
            self._note("reversed")
        # A stable sort by the hidden key, so copies and same-second messages stay apart.
        keyed = sorted(records, key=lambda r: self._ms(session, r), reverse=order == "desc")
        out: dict[str, Any] = {"sms_histories": keyed}
        skip = self.behaviour.no_token if page else self.behaviour.no_token_empty
        if rng.random() < skip:
            self._note("no_token" if page else "no_token_empty")
        else:
            out["sync_token"] = self._issue(session.session_id, *window)
        return body(200, out)

    def _ms(self, session: _Session, record: dict[str, Any]) -> int:
        return next(m.ms for m in session.messages if m.record is record)

    def _issue(self, session_id: str, older: int, newer: int) -> str:
        text = f"{session_id}-{next(self._serial)}_{older}_{newer}"
        token = base64.b64encode(text.encode()).decode()
        self._tokens[token] = _Token(session_id, older, newer, self.tick)
        return token

    # --- one message ----------------------------------------------------------------------------

    def _message(self, session_id: str, message_id: str) -> Response:
        session = self.sessions.get(session_id)
        if session is None or session.deleted:
            return error(404, 12004, f"Session does not exist: {session_id}.")
        for message in session.messages:
            if message.message_id == message_id:
                return body(200, message.record)
        return error(404, 2001, "Message does not exist.")
