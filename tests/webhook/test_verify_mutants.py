"""Edges of webhook/verify.py that `make mutate` found untested (issue 17, docs/TESTING.md)."""

from __future__ import annotations

import pytest

from archiver.webhook.verify import Refusal, ReplayMemory, check_request, signature

KEY = b"s3cret-token"
BODY = b'{"event":"phone.sms_received","payload":{}}'
NOW = 1_700_000_000.0


def check(timestamp: str, provided: str) -> Refusal | None:
    return check_request(KEY, timestamp, provided, BODY, now=NOW, tolerance=300)


@pytest.mark.parametrize(
    "provided",
    [
        # aiohttp decodes header bytes that are not UTF-8 with surrogateescape: a lone
        # surrogate, which strict UTF-8 cannot encode. Refused, never an exception.
        "v0=\udcff" + "0" * 63,
        "\udcc3\udca9",
    ],
)
def test_a_signature_header_that_is_not_utf8_is_a_bad_signature(provided: str) -> None:
    assert check(str(int(NOW)), provided) is Refusal.BAD_SIGNATURE


def test_twelve_digits_are_still_a_timestamp_thirteen_are_not() -> None:
    twelve = "1" + "0" * 11  # the year 5138: genuine but far in the future
    assert check(twelve, signature(KEY, twelve, BODY)) is Refusal.FUTURE
    thirteen = "1" + "0" * 12
    assert check(thirteen, signature(KEY, thirteen, BODY)) is Refusal.BAD_TIMESTAMP


def test_replay_memory_of_capacity_one_keeps_the_newest_request() -> None:
    memory = ReplayMemory(tolerance=300, capacity=1)
    memory.remember("a", NOW, NOW)
    assert memory.seen("a", NOW)
    memory.remember("b", NOW, NOW)
    assert len(memory) == 1
    assert memory.seen("b", NOW) and not memory.seen("a", NOW)


@pytest.mark.parametrize("capacity", [0, -1])
def test_replay_memory_needs_a_positive_capacity(capacity: int) -> None:
    with pytest.raises(ValueError, match=r"^capacity must be positive$"):
        ReplayMemory(tolerance=300, capacity=capacity)
