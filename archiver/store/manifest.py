"""The manifest line format: canonical JSON, the hash chain, and what each kind must carry.

Pure functions only, so the writer, the start-up recovery scan and `verify` share one definition
of a valid line. The format is a public contract (DESIGN.md, "Archive format"): an auditor must
be able to re-check it with nothing but a JSON parser and SHA-256, so everything here stays
plain: `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in UTF-8, and
`prev` is the SHA-256 of the previous line's bytes without its newline.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_plus

ZERO_HASH: Final = "0" * 64
KINDS: Final = frozenset({"message", "attachment", "attachment_failed", "event"})
SOURCES: Final = frozenset({"sync", "webhook"})
# Keys the writer fills in; an entry handed to the writer must not carry them.
LINE_KEYS: Final = ("seq", "prev", "at")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_SEGMENT = re.compile(r"(\d{6,})\.jsonl")


def _escape_lone_surrogates(exc: UnicodeError) -> tuple[str, int]:
    # Upstream text cut at a UTF-16 code unit leaves a lone surrogate, which UTF-8 cannot
    # carry. Writing it as a JSON \uXXXX escape keeps the line valid UTF-8 and parses back to
    # the very same string, so the record is archived as received instead of being refused.
    assert isinstance(exc, UnicodeEncodeError)
    bad = exc.object[exc.start : exc.end]
    for high, low in itertools.pairwise(bad):
        if "\ud800" <= high <= "\udbff" and "\udc00" <= low <= "\udfff":
            # Two code points that form a pair: written as two escapes, they would parse
            # back as ONE character, and the line would no longer match its digest. (JSON
            # text never yields this; only a record built in code can.)
            raise ValueError("a surrogate pair held as two code points cannot be archived")
    return "".join(f"\\u{ord(ch):04x}" for ch in bad), exc.end


codecs.register_error("archiver-json-surrogate", _escape_lone_surrogates)


# Built once: json.dumps with non-default options constructs a new encoder on every call.
_ENCODER: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical(obj: object) -> bytes:
    """The canonical JSON bytes of `obj`. Raises ValueError for NaN/Infinity or non-JSON values."""
    try:
        text = _ENCODER.encode(obj)
    except TypeError as exc:  # a non-JSON value (bytes, set, object): the caller's bug
        raise ValueError(f"not JSON-serialisable: {exc}") from exc
    return text.encode("utf-8", "archiver-json-surrogate")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_digest(record: Mapping[str, Any]) -> str:
    """The `digest` of a message line: SHA-256 of the canonical (jwt-stripped) record."""
    return sha256_hex(canonical(record))


def line_hash(line: bytes) -> str:
    """What the next line's `prev` holds: SHA-256 of a line's bytes without its newline."""
    return hashlib.sha256(line).hexdigest()


def line_object(entry: Mapping[str, Any], seq: int, prev: str, at: str) -> dict[str, Any]:
    """The full line object: the entry plus the keys the writer owns."""
    clash = [key for key in LINE_KEYS if key in entry]
    if clash:
        raise ValueError(f"entry must not carry {', '.join(clash)}: the writer fills them in")
    return {**entry, "seq": seq, "prev": prev, "at": at}


def encode_line(entry: Mapping[str, Any], seq: int, prev: str, at: str) -> bytes:
    """One manifest line, canonical, without its newline."""
    return canonical(line_object(entry, seq, prev, at))


_escape: Final = json.encoder.encode_basestring  # the C encoder's own, for ensure_ascii=False


def encode_message_line(
    entry: Mapping[str, Any], seq: int, prev: str, at: str, record: bytes
) -> bytes:
    """`encode_line(entry, seq, prev, at)` for a message entry that `dedupe.plan_messages`
    built and the writer numbers, whose record is already encoded (`record` =
    canonical(entry["record"]), computed anyway for the digest).

    Byte for byte the same (tests hold it to that), about 8x cheaper: the record, most of the
    line, is not encoded a second time, and the envelope is laid out in sorted key order by
    hand. The caller vouches for the entry's shape: exactly the keys plan_messages sets,
    `supersedes` absent or an int, and `at` (RFC 3339 from our clock), `prev` and `digest`
    (hex) and `source` (one of SOURCES) ASCII without quotes or backslashes, so only the two
    ids, which come from Zoom, are escaped.
    """
    supersedes = entry.get("supersedes")
    text = (
        f'{{"at":"{at}","digest":"{entry["digest"]}","kind":"message",'
        f'"message_id":{_escape(entry["message_id"])},"prev":"{prev}","record":'
    )
    tail = (
        f',"seq":{seq},"session_id":{_escape(entry["session_id"])},"source":"{entry["source"]}"'
        + ("}" if supersedes is None else f',"supersedes":{supersedes}}}')
    )
    return (
        text.encode("utf-8", "archiver-json-surrogate")
        + record
        + tail.encode("utf-8", "archiver-json-surrogate")
    )


def utc_now_rfc3339() -> str:
    """Archive time for the `at` key, e.g. 2026-11-27T16:35:37.123456Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def segment_name(n: int) -> str:
    """File name of segment `n` (1-based): 000001.jsonl."""
    if n < 1:
        raise ValueError(f"segment numbers start at 1, not {n}")
    return f"{n:06d}.jsonl"


def parse_segment_name(name: str) -> int | None:
    """The segment number of a canonical segment file name, else None (e.g. `2.jsonl`)."""
    match = _SEGMENT.fullmatch(name)
    if match is None:
        return None
    n = int(match.group(1))
    return n if n >= 1 and segment_name(n) == name else None


def is_hex_digest(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


# --- jwt stripping -------------------------------------------------------------------------


def strip_jwt_from_url(url: str) -> str:
    """`url` without its `jwt` query parameter(s); every other byte stays as it was.

    Done by hand rather than with urlsplit/urlunsplit, which normalise (an empty `?` or `#`
    vanishes), so that a stored URL differs from the received one only by the secret.
    """
    qmark = url.find("?")
    if qmark < 0:
        return url
    hash_at = url.find("#", qmark)
    end = len(url) if hash_at < 0 else hash_at
    parts = url[qmark + 1 : end].split("&")
    # Case-insensitive and percent-decoded: leaking a secret is worse than dropping an odd
    # parameter that merely looks like one.
    kept = [part for part in parts if unquote_plus(part.split("=", 1)[0]).lower() != "jwt"]
    if len(kept) == len(parts):
        return url
    query = "&".join(kept)
    return url[:qmark] + ("?" + query if kept else "") + url[end:]


def strip_jwt(record: Any) -> Any:
    """A deep copy of `record` with the jwt removed from every `download_url`, at any depth.

    Scalars (str, int, float, bool, None) are immutable and shared, not copied.
    """
    if isinstance(record, dict):
        out = {}
        for key, value in record.items():
            if isinstance(value, dict | list | tuple):
                value = strip_jwt(value)  # noqa: PLW2901 - the copy replaces the original
            elif key == "download_url" and isinstance(value, str):
                value = strip_jwt_from_url(value)  # noqa: PLW2901
            out[key] = value
        return out
    if isinstance(record, list | tuple):
        return [strip_jwt(item) for item in record]
    return record


# --- checks shared by recovery and verify ----------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid in a manifest line")


def parse_line(line: bytes) -> dict[str, Any]:
    """Parse one line (without newline). ValueError if it is not a UTF-8 JSON object."""
    obj = json.loads(line, parse_constant=_reject_constant)
    if not isinstance(obj, dict):
        raise ValueError("line is not a JSON object")
    return obj


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def link_problem(obj: Mapping[str, Any], seq: int, prev: str) -> str | None:
    """Why `obj` cannot follow the line (seq - 1, prev); None when it chains."""
    got = obj.get("seq")
    if not _is_int(got):
        return f"seq is {got!r}, not an integer"
    if got != seq:
        return f"seq {got} where {seq} was expected"
    if obj.get("prev") != prev:
        return f"prev {str(obj.get('prev'))[:16]}... does not match the hash of line seq {seq - 1}"
    return None


_STR = "a non-empty string"
_REQUIRED: Final[dict[str, dict[str, str]]] = {
    "message": {
        "session_id": _STR,
        "message_id": _STR,
        "record": "an object",
        "digest": "a SHA-256 hex",
        "source": "sync or webhook",
    },
    "attachment": {
        "session_id": _STR,
        "message_id": _STR,
        "attachment_id": _STR,
        "name": "present",
        "type": "present",
        "size": "present",
        "sha256": "a SHA-256 hex",
        "blob": _STR,
    },
    "attachment_failed": {
        "session_id": _STR,
        "message_id": _STR,
        "attachment_id": _STR,
        "name": "present",
        "type": "present",
        "size": "present",
        "reason": _STR,
        "attempts": "an integer",
    },
    "event": {"event": _STR},
}


def _fits(value: object, rule: str) -> bool:
    if rule == _STR:
        return isinstance(value, str) and value != ""
    if rule == "an object":
        return isinstance(value, dict)
    if rule == "a SHA-256 hex":
        return is_hex_digest(value)
    if rule == "sync or webhook":
        return value in SOURCES
    if rule == "an integer":
        return _is_int(value)
    return True  # "present": Zoom may send null for name/type/size; the key must exist


def entry_problems(entry: Mapping[str, Any]) -> list[str]:
    """What is missing or ill-typed in an entry (the keys of its kind), empty when it is fine."""
    kind = entry.get("kind")
    if kind not in KINDS:
        return [f"kind {kind!r} is not one of {', '.join(sorted(KINDS))}"]
    problems = [
        f"{key} is missing" if key not in entry else f"{key} must be {rule}"
        for key, rule in _REQUIRED[kind].items()
        if key not in entry or not _fits(entry[key], rule)
    ]
    if kind == "message" and "supersedes" in entry and not _is_int(entry["supersedes"]):
        problems.append("supersedes must be an integer")
    return problems


def line_problems(obj: Mapping[str, Any]) -> list[str]:
    """Problems of a whole parsed line beyond the chain: `at`, kind keys, message digest."""
    problems = entry_problems(obj)
    at = obj.get("at")
    if not isinstance(at, str) or _AT.fullmatch(at) is None:
        problems.append(f"at {at!r} is not an RFC 3339 UTC time")
    if obj.get("kind") == "message" and not problems:
        supersedes, seq = obj.get("supersedes"), obj.get("seq")
        if supersedes is not None and _is_int(seq) and not 0 < supersedes < seq:
            problems.append(f"supersedes {supersedes} is not an earlier line")
        if record_digest(obj["record"]) != obj["digest"]:
            problems.append("digest does not match the record")
        elif strip_jwt(obj["record"]) != obj["record"]:
            problems.append("record carries a jwt in a download_url")
    return problems
