"""Signature, timestamp window, URL validation and replay memory: the pure core, in tables."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from archiver.webhook.verify import (
    Refusal,
    ReplayMemory,
    check_request,
    header_refusal,
    signature,
    url_validation_answer,
)

KEY = b"s3cret-token"
BODY = b'{"event":"phone.sms_received","payload":{}}'
NOW = 1_700_000_000.0


def zoom_signature(timestamp: str, body: bytes, key: bytes = KEY) -> str:
    return "v0=" + hmac.new(key, b"v0:" + timestamp.encode() + b":" + body, "sha256").hexdigest()


def test_signature_is_zooms_v0_hmac() -> None:
    assert signature(KEY, "1700000000", BODY) == zoom_signature("1700000000", BODY)


def test_url_validation_answer_is_hex_hmac_of_the_plain_token() -> None:
    answer = url_validation_answer(KEY, "qgg8vlvZRS6UYooatFL8Aw")
    expected = hmac.new(KEY, b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert answer == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}


GOOD_TS = str(int(NOW))


CASES = [
    (GOOD_TS, zoom_signature(GOOD_TS, BODY), BODY, None),
    # the window is inclusive at both ends
    (str(int(NOW) - 300), zoom_signature(str(int(NOW) - 300), BODY), BODY, None),
    (str(int(NOW) + 300), zoom_signature(str(int(NOW) + 300), BODY), BODY, None),
    (None, zoom_signature(GOOD_TS, BODY), BODY, Refusal.MISSING_TIMESTAMP),
    ("", zoom_signature(GOOD_TS, BODY), BODY, Refusal.MISSING_TIMESTAMP),
    (GOOD_TS, None, BODY, Refusal.MISSING_SIGNATURE),
    (GOOD_TS, "", BODY, Refusal.MISSING_SIGNATURE),
    ("17e8", zoom_signature("17e8", BODY), BODY, Refusal.BAD_TIMESTAMP),
    ("-1", zoom_signature("-1", BODY), BODY, Refusal.BAD_TIMESTAMP),
    ("1" * 13, zoom_signature("1" * 13, BODY), BODY, Refusal.BAD_TIMESTAMP),
    ("١٧٠٠٠٠٠٠٠٠", "v0=00", BODY, Refusal.BAD_TIMESTAMP),  # noqa: RUF001 - Arabic digits
    (GOOD_TS, zoom_signature(GOOD_TS, BODY, b"other-key"), BODY, Refusal.BAD_SIGNATURE),
    (GOOD_TS, zoom_signature(GOOD_TS, BODY + b" "), BODY, Refusal.BAD_SIGNATURE),
    (GOOD_TS, zoom_signature(str(int(NOW) - 1), BODY), BODY, Refusal.BAD_SIGNATURE),
    (GOOD_TS, zoom_signature(GOOD_TS, BODY).upper(), BODY, Refusal.BAD_SIGNATURE),
    (GOOD_TS, zoom_signature(GOOD_TS, BODY)[3:], BODY, Refusal.BAD_SIGNATURE),
    (GOOD_TS, "v0=ünïcode", BODY, Refusal.BAD_SIGNATURE),
    # a forged signature on an old request is reported as forged, not as stale
    ("1600000000", "v0=" + "0" * 64, BODY, Refusal.BAD_SIGNATURE),
    (str(int(NOW) - 301), zoom_signature(str(int(NOW) - 301), BODY), BODY, Refusal.STALE),
    (str(int(NOW) + 301), zoom_signature(str(int(NOW) + 301), BODY), BODY, Refusal.FUTURE),
]


@pytest.mark.parametrize(("timestamp", "provided", "body", "expected"), CASES)
def test_check_request(
    timestamp: str | None, provided: str | None, body: bytes, expected: Refusal | None
) -> None:
    assert check_request(KEY, timestamp, provided, body, now=NOW, tolerance=300) is expected


@pytest.mark.parametrize(("timestamp", "provided", "body", "expected"), CASES)
def test_the_header_check_before_the_body_agrees_with_the_full_check(
    timestamp: str | None, provided: str | None, body: bytes, expected: Refusal | None
) -> None:
    # What the receiver refuses unread is refused for the same reason once read.
    early = header_refusal(timestamp, provided)
    assert early is None or early is expected


@pytest.mark.parametrize(
    ("timestamp", "provided", "expected"),
    [
        (GOOD_TS, "v0=" + "0" * 64, None),  # the shape is right: only the body can tell
        ("9" * 12, "v0=" + "0" * 64, None),
        ("9" * 13, "v0=" + "0" * 64, Refusal.BAD_TIMESTAMP),
        (None, None, Refusal.MISSING_TIMESTAMP),
        (GOOD_TS, None, Refusal.MISSING_SIGNATURE),
        (GOOD_TS, "v1=" + "0" * 64, Refusal.BAD_SIGNATURE),
        (GOOD_TS, "v0=" + "0" * 63, Refusal.BAD_SIGNATURE),
        (GOOD_TS, "v0=" + "0" * 65, Refusal.BAD_SIGNATURE),
        (GOOD_TS, "v0=" + "g" * 64, Refusal.BAD_SIGNATURE),
        (GOOD_TS, "v0=" + "A" * 64, Refusal.BAD_SIGNATURE),
    ],
)
def test_header_refusal(timestamp: str | None, provided: str | None, expected: Refusal) -> None:
    assert header_refusal(timestamp, provided) is expected
    # and the full check, whatever the body, refuses the same way
    if expected is not None:
        assert check_request(KEY, timestamp, provided, BODY, now=NOW, tolerance=300) is expected


def test_replay_memory_forgets_after_the_window_and_beyond_capacity() -> None:
    memory = ReplayMemory(tolerance=300, capacity=3)
    memory.remember("a", NOW, NOW)
    assert memory.seen("a", NOW + 300)
    assert not memory.seen("a", NOW + 301)  # a replay this old is refused as stale anyway
    for key in "bcde":
        memory.remember(key, NOW, NOW)
    assert len(memory) == 3
    assert not memory.seen("b", NOW) and memory.seen("e", NOW)


def test_replay_memory_refuses_a_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ReplayMemory(tolerance=300, capacity=0)
