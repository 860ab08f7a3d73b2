"""Webhook objects in every shape Zoom's webhook schema allows, and what the manifest must hold.

The oracle is written out here from DESIGN.md ("Archive format") rather than imported from the
archiver: canonical JSON is `sort_keys`, no spaces, UTF-8 (a lone surrogate as its `\\uXXXX`
escape), and a stored record is the received object with the `jwt` query parameter removed
from every `download_url` and nothing else changed. A shared mistake cannot pass both sides.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from typing import Any, Final

ACCOUNT_ID: Final = "2TP-coFVSnmyvYZogk8gAg"
EVENTS: Final = ("phone.sms_received", "phone.sms_sent", "phone.sms_sent_failed")
_JWT_PARAM = re.compile(r"(?i)^jwt(=|$)")
# Member and owner types: the schema's enums, and what the API also returns.
_TYPES: Final = ("user", "callQueue", "autoReceptionist", "sharedLineGroup")
# Attachment types as Zoom's webhook example spells them (lower case), and other spellings.
_ATTACHMENT_TYPES: Final = ("jpg", "jpeg", "png", "gif", "audio", "video", "other", "JPG", "heic")
_TEXTS: Final = (
    "ttt",
    "",
    "Ünïcödé and emoji 😀👍🏽",
    'quotes " and \\ backslash',
    "line\nbreak\tand tab",
    "<script>alert(1)</script>",
    "مرحبا بالعالم",
    "cut \ud83d",  # a lone surrogate, as text cut at a UTF-16 unit arrives
)
_TIMES: Final = ("2021-07-19T18:43:43Z", "2024-05-01T10:00:00.750Z", "2024-05-01T12:00:00+02:00")


def canonical_bytes(obj: Any) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace")


def url_without_jwt(url: str) -> str:
    base, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_sign, fragment = rest.partition("#")
    params = query.split("&")
    kept = [p for p in params if not _JWT_PARAM.match(p)]
    if len(kept) == len(params):
        return url
    return base + ("?" + "&".join(kept) if kept else "") + hash_sign + fragment


def without_jwt(obj: Any) -> Any:
    """A copy of `obj` with the jwt removed from every `download_url`, at any depth."""
    if isinstance(obj, dict):
        return {
            key: url_without_jwt(value)
            if key == "download_url" and isinstance(value, str)
            else without_jwt(value)
            for key, value in obj.items()
        }
    if isinstance(obj, list):
        return [without_jwt(item) for item in obj]
    return obj


def expected_record_bytes(obj: dict[str, Any]) -> bytes:
    """The canonical bytes a webhook line's `record` must have for the object `obj`."""
    return canonical_bytes(without_jwt(obj))


def record_bytes_in_line(raw: bytes) -> bytes:
    """The bytes of the `record` inside one raw (canonical) message line.

    Keys are sorted, so `record` comes after `prev` and right before `seq`; no unescaped quote
    can occur inside a string, so the first `"record":` and the last `,"seq":` are the line's.
    """
    start = raw.index(b'"record":') + len(b'"record":')
    return raw[start : raw.rindex(b',"seq":')]


def event_body(name: str, obj: dict[str, Any], account_id: str = ACCOUNT_ID) -> bytes:
    event = {
        "event": name,
        "event_ts": 1626759486127,
        "payload": {"account_id": account_id, "object": obj},
    }
    return json.dumps(event).encode()


# --- objects drawn from the schema -----------------------------------------------------------


def schema_shaped_events(seed: int, n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """`n` (event name, event) pairs whose objects vary every optional part of the schema."""
    rng = random.Random(seed)
    for i in range(n):
        name = EVENTS[i % len(EVENTS)]
        obj = schema_object(rng, name, i)
        yield (
            name,
            {
                "event": name,
                "event_ts": 1626759486127 + i,
                "payload": {"account_id": ACCOUNT_ID, "object": obj},
            },
        )


def schema_object(rng: random.Random, name: str, i: int) -> dict[str, Any]:
    received = name == "phone.sms_received"
    obj: dict[str, Any] = {
        "session_id": f"{rng.getrandbits(128):032x}",
        "message_id": f"{rng.getrandbits(64):016x}-{i}",
        "date_time": rng.choice(_TIMES),
        "message": rng.choice(_TEXTS),
        "message_type": rng.randint(1, 6),
        "sender": _member(rng, sender=True, received=received),
        "to_members": [
            _member(rng, sender=False, received=received) for _ in range(rng.randint(1, 3))
        ],
        "owner": _owner(rng, received),
        "attachments": [_attachment(rng) for _ in range(rng.choice((0, 0, 1, 2, 3)))],
    }
    if not received:
        reason = rng.choice((None, "", "1101-phone message error send"))
        if reason is not None or name == "phone.sms_sent_failed":
            obj["failure_reason"] = reason or ""
    if rng.random() < 0.4:
        obj["phone_number_campaign_opt_statuses"] = [
            _opt_status(rng) for _ in range(rng.randint(0, 2))
        ]
    # Insertion order varies too: the manifest's canonical form must not depend on it.
    keys = list(obj)
    rng.shuffle(keys)
    return {key: obj[key] for key in keys}


def _member(rng: random.Random, *, sender: bool, received: bool) -> dict[str, Any]:
    member: dict[str, Any] = {"phone_number": f"+1{rng.randint(2000000000, 9999999999)}"}
    if rng.random() < 0.7:
        member["id"] = f"U{rng.getrandbits(64):x}"
    if rng.random() < 0.6:
        member["type"] = rng.choice(_TYPES)
    if rng.random() < 0.7:
        member["display_name"] = rng.choice(("Jackson", "Tomcat", "", "Zoë 🐈"))
    if not sender and received and rng.random() < 0.5:
        member["is_message_owner"] = rng.random() < 0.5
    if rng.random() < 0.1:
        member["extension_number"] = rng.randint(100, 999)  # additionalProperties: true
    return member


def _owner(rng: random.Random, received: bool) -> dict[str, Any]:
    owner: dict[str, Any] = {"type": rng.choice(_TYPES), "id": f"O{rng.getrandbits(64):x}"}
    if rng.random() < 0.5:
        owner["team_id" if received else "sms_sender_user_id"] = f"T{rng.getrandbits(48):x}"
    return owner


def _attachment(rng: random.Random) -> dict[str, Any]:
    attachment_id = f"A{rng.getrandbits(64):x}"
    base = f"https://file.zoom.us/file/download/{attachment_id}"
    token = f"eyJ{rng.getrandbits(128):x}.payload.signature"
    url = rng.choice(
        (
            f"{base}?jwt={token}",
            f"{base}?jwt={token}&type=jpg",
            f"{base}?type=jpg&jwt={token}",
            f"{base}?JWT={token}#frag",
            base,
            "https://downloadUrl.zoom.us",
        )
    )
    return {
        "id": attachment_id,
        "size": rng.randint(0, 10_000_000),
        "name": rng.choice(("Screenshot2021_05_17_183842.jpg", "../../etc/passwd", "voice.amr")),
        "type": rng.choice(_ATTACHMENT_TYPES),
        "download_url": url,
    }


def _opt_status(rng: random.Random) -> dict[str, Any]:
    status: dict[str, Any] = {
        "consumer_phone_number": "+120970XXXXX",
        "zoom_phone_user_number": "+120971XXXXX",
        "opt_status": rng.choice(("pending", "opt_out", "opt_in")),
    }
    if rng.random() < 0.5:
        status["opt_in_status"] = rng.randint(0, 1)
    return status
