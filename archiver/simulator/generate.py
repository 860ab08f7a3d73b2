"""Deterministic account data: the same config always yields byte-identical sessions.

Everything is drawn from one `random.Random` in a fixed order, session after session, so a
larger `sessions` keeps the earlier sessions unchanged. Coverage is forced where chance could
miss it: the first four sessions take each session type and each conversation kind (group,
direct, international, on-net) and start with an MMS then a text, which yields all six message
types; the first six attachments take each attachment type, and the next ones take the hostile
names. Live traffic uses a `fork` with its own RNG that shares the owners.
"""

from __future__ import annotations

import base64
import math
import random
from typing import Any, Final

from archiver.simulator.config import SimulatorConfig, anchor_ms
from archiver.simulator.model import Attachment, Message, Session, iso_seconds

SESSION_TYPES: Final = ("user", "call_queue", "auto_receptionist", "service_endpoint")
SESSION_WEIGHTS: Final = (70, 12, 8, 10)
OWNER_TYPES: Final = {
    "user": "user",
    "call_queue": "callQueue",
    "auto_receptionist": "autoReceptionist",
    "service_endpoint": "serviceEndpoint",
}
KINDS: Final = ("group", "direct", "international", "on_net")
KIND_WEIGHTS: Final = (15, 60, 10, 15)
ATTACHMENT_TYPES: Final = ("JPG", "PNG", "GIF", "AUDIO", "VIDEO", "OTHER")
ATTACHMENT_WEIGHTS: Final = (35, 20, 10, 10, 10, 15)
EXTENSIONS: Final = {
    "JPG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "AUDIO": "mp3",
    "VIDEO": "mp4",
    "OTHER": "pdf",
}
STATUSES_OUT: Final = ("delivered", "sent", "failed_to_send", "failed_to_deliver", "unknown")
STATUS_WEIGHTS: Final = (80, 8, 4, 4, 4)
# Names an archiver must never use as paths or trust for display.
HOSTILE_NAMES: Final = (
    "../../etc/passwd",
    "/abs/path/photo.jpg",
    "evil\x00.jpg",
    "A" * 296 + ".png",
    "\u6f22" * 98 + ".gif",  # 294 + 4 = 298 bytes of UTF-8
    "invoice\u202efdp.exe",
    "\u202egnp.jpg",
    "..\\..\\windows\\system32\\drivers\\etc\\hosts",
    "line\nbreak.txt",
    "",
    ".",
    "..",
    "CON",
    " spaced name .jpg",
    "\U0001f600" * 75,  # 300 bytes of emoji
)
FIRST: Final = (
    "Ana", "José", "Zoë", "Søren", "Łukasz", "Nguyễn", "Анна", "محمد", "王芳", "Aoife",
    "Björn", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Hiroshi", "Ingrid", "Jamal",
)  # fmt: skip
LAST: Final = (
    "Smith", "O'Brien", "García", "Müller", "Kowalski", "Tanaka", "Okafor", "Ivanova",
    "Da Silva", "Nakamura", "Øvergård", "van der Berg", "Ng", "Dubois", "Schröder",
)  # fmt: skip
WORDS: Final = (
    "hi", "hello", "thanks", "please", "call", "me", "back", "when", "you", "can", "the",
    "order", "shipped", "today", "tomorrow", "meeting", "at", "noon", "confirm", "your",
    "appointment", "running", "late", "see", "you", "soon", "invoice", "attached", "can", "we",
    "move", "it", "to", "friday", "yes", "no", "maybe", "ok", "great", "sounds", "good", "let",
    "me", "check", "with", "the", "team", "your", "code", "is", "ready", "for", "pickup",
    "reply", "STOP", "to", "unsubscribe",
)  # fmt: skip
PHRASES: Final = (
    "Merci beaucoup, à bientôt !",
    "¿Dónde está la reunión mañana?",
    "Danke schön – bis später.",  # noqa: RUF001 - deliberate non-ASCII punctuation
    "お疲れ様です。明日の会議は10時からです。",
    "会议改到下午三点。",
    "Привет! Как дела?",
    "مرحبا، كيف حالك؟",
    "שלום, מה שלומך?",
    "नमस्ते, आप कैसे हैं?",
    "Γειά σου κόσμε",  # noqa: RUF001 - deliberate Greek
    "👍🏽 sounds good 🎉",
    "👨‍👩‍👧‍👦 family dinner at 7? 🍝🍷",
    "🇺🇸🇬🇧🇯🇵 flags",
    "e\u0301 combining a\u0308 marks",
    "𝕌𝕟𝕚𝕔𝕠𝕕𝕖 𝔪𝔞𝔱𝔥 letters",  # noqa: RUF001 - deliberate look-alikes
)  # fmt: skip
ODD_TEXTS: Final = (
    "",
    " ",
    "\u200b",
    "line one\nline two\r\nline three",
    'quotes " and \\ backslash',
    "<script>alert(1)</script>",
    "\u202etxet desrever",
    "null\x00byte",
    "tab\tseparated",
)
EMOJI: Final = ("😀", "👍", "❤️", "🎉", "🤷‍♀️", "🙏🏿", "🔥", "📎")


def seeded(*parts: object) -> random.Random:
    """An RNG for one purpose; string seeds are hashed, so every purpose draws apart."""
    return random.Random(":".join(map(str, parts)))  # noqa: S311 - simulated data, no secrets


def random_id(rng: random.Random, nbytes: int = 16) -> str:
    """A Zoom-looking id: base64url without padding (22 characters for 16 bytes)."""
    return base64.urlsafe_b64encode(rng.getrandbits(8 * nbytes).to_bytes(nbytes)).decode()[:-2]


class Generator:
    """Draws sessions and messages from `rng`, in a fixed order."""

    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.owners: dict[str, list[dict[str, Any]]] = {}
        self.attachments_made = 0
        self.message_ids: set[str] = set()

    def fork(self, rng: random.Random) -> Generator:
        """A generator for live traffic: its own RNG, the same owners and ids so far."""
        other = Generator(self.config, rng)
        other.owners, other.message_ids = self.owners, self.message_ids
        other.attachments_made = self.attachments_made
        return other

    def account(self) -> list[Session]:
        """The whole generated history, sessions in creation order, messages oldest first."""
        cfg = self.config
        end = anchor_ms(cfg.anchor)
        history = int(cfg.history_days * 86_400_000)
        sessions = []
        for seq in range(cfg.sessions):
            forced = seq < len(KINDS)
            session = self.session(seq, forced_index=seq if forced else None)
            start = end - int(history * self.rng.random())
            # Skewed towards the anchor: most conversations are still going on lately.
            stop = start + int((end - start) * self.rng.random() ** 0.3)
            count = self._message_count()
            if forced:
                count = max(count, 3)
            for index, ms in enumerate(self._times(start, stop, count)):
                files: int | None = None
                if forced and index < 2 and cfg.attachment_probability > 0:
                    files = self._attachment_count() if index == 0 else 0
                session.append(self.message(session, ms, files))
            sessions.append(session)
        return sessions

    def session(self, seq: int, forced_index: int | None = None) -> Session:
        rng = self.rng
        if forced_index is not None:
            session_type, kind = SESSION_TYPES[forced_index], KINDS[forced_index]
        else:
            session_type = rng.choices(SESSION_TYPES, SESSION_WEIGHTS)[0]
            kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
        known = self.owners.setdefault(session_type, [])
        if known and rng.random() < 0.5:
            owner = rng.choice(known)
        else:
            owner = self._internal(OWNER_TYPES[session_type])
            if session_type == "user" and rng.random() < 0.1:
                owner["owner"]["type"] = "sharedLineGroup"
            known.append(owner)
        if kind == "group":
            peers = [self._external("1") for _ in range(rng.randint(2, 9))]
        elif kind == "on_net":
            peers = [self._internal("user")]
        else:
            peers = [self._external("1" if kind == "direct" else None)]
        return Session(
            session_id=f"{rng.getrandbits(128):032x}",
            session_type=session_type,
            seq=seq,
            kind=kind,
            owner=owner,
            peers=peers,
        )

    def message(self, session: Session, ms: int, attachments: int | None = None) -> Message:
        """One message at `ms` with `attachments` files (None: MMS by attachment_probability)."""
        rng, cfg = self.rng, self.config
        if attachments is None:
            mms = rng.random() < cfg.attachment_probability
            attachments = self._attachment_count() if mms else 0
        files = self._attachments(session, attachments)
        direction = "In" if rng.random() < 0.55 else "Out"
        if direction == "Out":
            sender, to = session.owner, session.peers
            status = rng.choices(STATUSES_OUT, STATUS_WEIGHTS)[0]
        else:
            sender = rng.choice(session.peers)
            to = [session.owner, *(p for p in session.peers if p is not sender)]
            status = "received"
        mms = bool(files)
        message_type = {
            "group": 4 if mms else 3,
            "direct": 2 if mms else 1,
            "international": 2 if mms else 5,
            "on_net": 6,
        }[session.kind]
        text = "" if mms and rng.random() < 0.4 else self._text()
        message_id = random_id(rng)
        while message_id in self.message_ids:  # pragma: no cover - 128 random bits
            message_id = random_id(rng)
        self.message_ids.add(message_id)
        record = {
            "message_id": message_id,
            "date_time": iso_seconds(ms),
            "direction": direction,
            "message": text,
            "message_type": message_type,
            "delivery_status": status,
            "sender": sender,
            "to_members": to,
        }
        return Message(message_id, ms, direction, status, tuple(files), record)

    # --- pieces ---

    def _message_count(self) -> int:
        rng, cfg = self.rng, self.config
        if rng.random() < cfg.busy_fraction:
            low = min(100, cfg.max_messages)
            count = math.exp(rng.uniform(math.log(low), math.log(cfg.max_messages)))
        else:
            sigma = 1.0
            count = rng.lognormvariate(math.log(cfg.mean_messages) - sigma**2 / 2, sigma)
        return max(1, min(cfg.max_messages, round(count)))

    def _times(self, start: int, stop: int, count: int) -> list[int]:
        rng = self.rng
        times = sorted(rng.randint(start, max(start, stop)) for _ in range(count))
        for i in range(1, count):
            if rng.random() < 0.15:  # bursts: several messages inside one second
                times[i] = times[i - 1] + rng.randint(1, 900)
            times[i] = max(times[i], times[i - 1] + 1)
        return times

    def _attachment_count(self) -> int:
        if self.rng.random() < 0.02:
            return 10
        count = 1
        while count < 10 and self.rng.random() < 0.35:
            count += 1
        return count

    def _attachments(self, session: Session, count: int) -> list[Attachment]:
        rng, cfg = self.rng, self.config
        files: list[Attachment] = []
        for _ in range(count):
            reuse = rng.choice(session.pool) if session.pool and rng.random() < 0.05 else None
            if reuse is not None and reuse not in files:
                files.append(reuse)  # Zoom's own example repeats an attachment id
                continue
            index = self.attachments_made
            self.attachments_made += 1
            if index < len(ATTACHMENT_TYPES):
                kind = ATTACHMENT_TYPES[index]
            else:
                kind = rng.choices(ATTACHMENT_TYPES, ATTACHMENT_WEIGHTS)[0]
            hostile = index - len(ATTACHMENT_TYPES)
            if 0 <= hostile < len(HOSTILE_NAMES):
                name = HOSTILE_NAMES[hostile]
            elif rng.random() < 0.5:
                name = f"{random_id(rng)}.{EXTENSIONS[kind]}"
            else:
                name = f"{rng.choice(FIRST)} {rng.randint(1, 9999):04d}.{EXTENSIONS[kind]}"
            if rng.random() < 0.03:
                size = rng.randint(0, 15)
            else:
                top = max(cfg.max_attachment_bytes, 16)
                size = min(
                    cfg.max_attachment_bytes,
                    int(math.exp(rng.uniform(math.log(16), math.log(top)))),
                )
            attachment = Attachment(random_id(rng), name, kind, size)
            files.append(attachment)
            session.pool.append(attachment)
        return files

    def _text(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20))).capitalize()
        if roll < 0.75:
            return rng.choice(PHRASES)
        if roll < 0.88:
            words = (rng.choice(WORDS + EMOJI) for _ in range(rng.randint(2, 12)))
            return " ".join(words)
        if roll < 0.96:
            parts: list[str] = []
            while sum(map(len, parts)) < 1200:
                parts.append(rng.choice((*PHRASES, " ".join(WORDS[:30]))))
            return " ".join(parts)
        return rng.choice(ODD_TEXTS)

    def _internal(self, owner_type: str) -> dict[str, Any]:
        rng = self.rng
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if owner_type != "user":
            name = f"{name.split(maxsplit=1)[0]} {owner_type}"
        return {
            "phone_number": self._number("1"),
            "display_name": name,
            "owner": {"id": random_id(rng), "type": owner_type},
        }

    def _external(self, country: str | None) -> dict[str, Any]:
        rng = self.rng
        person: dict[str, Any] = {"phone_number": self._number(country)}
        if rng.random() < 0.6:
            person["display_name"] = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        return person

    def _number(self, country: str | None) -> str:
        rng = self.rng
        if country is None:
            country = rng.choice(("44", "49", "33", "81", "91", "55", "234", "61"))
        if country == "1":
            return f"1{rng.randint(201, 989)}{rng.randint(0, 9_999_999):07d}"
        return f"{country}{rng.randint(10**8, 10**10 - 1)}"
