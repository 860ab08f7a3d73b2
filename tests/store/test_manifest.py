"""Table tests for the pure manifest format functions."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.store.manifest import (
    SOURCES,
    ZERO_HASH,
    canonical,
    encode_line,
    encode_message_line,
    entry_problems,
    line_hash,
    line_problems,
    link_problem,
    parse_line,
    parse_segment_name,
    record_digest,
    segment_name,
    strip_jwt,
    strip_jwt_from_url,
    utc_now_rfc3339,
)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, b"{}"),
        ({"b": 1, "a": [1, 2, {"d": None, "c": True}]}, b'{"a":[1,2,{"c":true,"d":null}],"b":1}'),
        ({"text": "héllo"}, '{"text":"héllo"}'.encode()),
        ({"emoji": "😀 👍🏽"}, '{"emoji":"😀 👍🏽"}'.encode()),
        ({"cjk": "漢字", "rtl": "שלום"}, '{"cjk":"漢字","rtl":"שלום"}'.encode()),
        ({"ctl": 'a\nb\t"c\\'}, b'{"ctl":"a\\nb\\t\\"c\\\\"}'),
        ({"nul": "\x00\x1f"}, b'{"nul":"\\u0000\\u001f"}'),
        ({"f": 1.5, "i": -3, "big": 2**70}, b'{"big":1180591620717411303424,"f":1.5,"i":-3}'),
        ({"Z": 1, "a": 2, "_": 3}, b'{"Z":1,"_":3,"a":2}'),  # code point order
        # A lone surrogate (text cut mid-pair upstream) is escaped: still valid UTF-8.
        ({"cut": "ab\ud83d"}, b'{"cut":"ab\\ud83d"}'),
    ],
)
def test_canonical(obj: Any, expected: bytes) -> None:
    assert canonical(obj) == expected
    assert canonical(json.loads(expected)) == expected  # a fixed point of parse + encode
    expected.decode("utf-8")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"x": float("-inf")}, {1, 2}, b"x"])
def test_canonical_rejects_non_json(bad: Any) -> None:
    with pytest.raises(ValueError):
        canonical(bad)


def test_hashes() -> None:
    assert record_digest({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()
    assert line_hash(b"x") == hashlib.sha256(b"x").hexdigest()
    assert ZERO_HASH == "0" * 64


def test_encode_line_adds_chain_keys_and_refuses_them_in_the_entry() -> None:
    line = encode_line({"kind": "event", "event": "start"}, 1, ZERO_HASH, "2026-01-01T00:00:00Z")
    assert line == (
        b'{"at":"2026-01-01T00:00:00Z","event":"start","kind":"event","prev":"'
        + ZERO_HASH.encode()
        + b'","seq":1}'
    )
    assert not line.endswith(b"\n")
    with pytest.raises(ValueError, match="seq"):
        encode_line({"kind": "event", "event": "x", "seq": 5}, 1, ZERO_HASH, "t")


def test_chain_of_three_lines() -> None:
    prev, seq = ZERO_HASH, 0
    for name in ("a", "b", "c"):
        seq += 1
        line = encode_line({"kind": "event", "event": name}, seq, prev, "2026-01-01T00:00:00Z")
        obj = parse_line(line)
        assert link_problem(obj, seq, prev) is None
        assert line_problems(obj) == []
        prev = line_hash(line)
    assert link_problem(obj, seq + 1, prev) == f"seq {seq} where {seq + 1} was expected"
    assert "prev" in str(link_problem(obj, seq, ZERO_HASH))
    assert "not an integer" in str(link_problem({"seq": True}, 1, ZERO_HASH))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://f.zoom.us/file/download/A?jwt=eyJ.x.y", "https://f.zoom.us/file/download/A"),
        ("https://h/p?a=1&jwt=t&b=2", "https://h/p?a=1&b=2"),
        ("https://h/p?jwt=t&b=2", "https://h/p?b=2"),
        ("https://h/p?a=1&jwt=t", "https://h/p?a=1"),
        ("https://h/p?jwt=1&jwt=2", "https://h/p"),
        ("https://h/p?JWT=t&a=%20x+y", "https://h/p?a=%20x+y"),  # case; others kept verbatim
        ("https://h/p?%6Awt=t&a=1", "https://h/p?a=1"),  # percent-encoded name
        ("https://h/p?jwt&a=1", "https://h/p?a=1"),  # valueless
        ("https://h/p?jwt=t#frag", "https://h/p#frag"),
        ("https://h/p?a=1&jwt=t#x?jwt=y", "https://h/p?a=1#x?jwt=y"),  # fragment untouched
        ("https://h/p?jwtx=1&xjwt=2", "https://h/p?jwtx=1&xjwt=2"),  # other names
        ("https://h/p?a=1&&jwt=t", "https://h/p?a=1&"),
        ("https://h/p?", "https://h/p?"),  # nothing removed: byte-identical
        ("https://h/p", "https://h/p"),
        ("https://h/p?a=b=c&jwt=x=y", "https://h/p?a=b=c"),
        ("", ""),
        ("not a url ? jwt=1", "not a url ? jwt=1"),  # the key is " jwt", not jwt
        ("not a url?jwt=1", "not a url"),
        ("https://h/p?a=%ZZ&jwt=1", "https://h/p?a=%ZZ"),  # malformed escapes survive
    ],
)
def test_strip_jwt_from_url(url: str, expected: str) -> None:
    assert strip_jwt_from_url(url) == expected


def test_strip_jwt_walks_everything_and_copies() -> None:
    record = {
        "download_url": "https://h/a?jwt=1&k=v",
        "attachments": [
            {"download_url": "https://h/b?jwt=2"},
            {"download_url": None},
            {"download_url": 42},
            {"download_url": {"nested": "x?jwt=3", "download_url": "y?jwt=4"}},
            ["https://h/c?jwt=5"],
        ],
        "text": "https://h/d?jwt=6",  # not a download_url: left alone
    }
    stripped = strip_jwt(record)
    assert stripped == {
        "download_url": "https://h/a?k=v",
        "attachments": [
            {"download_url": "https://h/b"},
            {"download_url": None},
            {"download_url": 42},
            {"download_url": {"nested": "x?jwt=3", "download_url": "y"}},
            ["https://h/c?jwt=5"],
        ],
        "text": "https://h/d?jwt=6",
    }
    assert record["download_url"] == "https://h/a?jwt=1&k=v"  # input untouched
    assert stripped["attachments"] is not record["attachments"]


@pytest.mark.parametrize("value", [None, 3, "s", [1, [2]], (1, 2)])
def test_strip_jwt_on_non_dicts(value: Any) -> None:
    assert strip_jwt(value) == (list(value) if isinstance(value, tuple) else value)


@pytest.mark.parametrize(
    ("n", "name"), [(1, "000001.jsonl"), (42, "000042.jsonl"), (1234567, "1234567.jsonl")]
)
def test_segment_names(n: int, name: str) -> None:
    assert segment_name(n) == name
    assert parse_segment_name(name) == n


@pytest.mark.parametrize(
    "name", ["1.jsonl", "0000001.jsonl", "000000.jsonl", "000001.json", "000001.jsonl.tmp", "x"]
)
def test_non_canonical_segment_names(name: str) -> None:
    assert parse_segment_name(name) is None


def test_segment_zero_is_invalid() -> None:
    with pytest.raises(ValueError):
        segment_name(0)


def test_utc_now_is_rfc3339_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_now_rfc3339())


GOOD_SHA = "a" * 64


@pytest.mark.parametrize(
    ("entry", "problems"),
    [
        ({"kind": "event", "event": "start"}, []),
        ({"kind": "event"}, ["event is missing"]),
        (
            {"kind": "nope"},
            ["kind 'nope' is not one of attachment, attachment_failed, event, message"],
        ),
        (
            {
                "kind": "message",
                "session_id": "s",
                "message_id": "m",
                "record": {},
                "digest": GOOD_SHA,
                "source": "sync",
            },
            [],
        ),
        (
            {
                "kind": "message",
                "session_id": "",
                "message_id": 5,
                "record": [],
                "digest": "A" * 64,
                "source": "email",
                "supersedes": "1",
            },
            [
                "session_id must be a non-empty string",
                "message_id must be a non-empty string",
                "record must be an object",
                "digest must be a SHA-256 hex",
                "source must be sync or webhook",
                "supersedes must be an integer",
            ],
        ),
        (
            {
                "kind": "attachment",
                "session_id": "s",
                "message_id": "m",
                "attachment_id": "a",
                "name": None,
                "type": None,
                "size": None,
                "sha256": GOOD_SHA,
                "blob": "blobs/sha256/aa/" + GOOD_SHA,
            },
            [],
        ),
        (
            {"kind": "attachment_failed", "session_id": "s", "message_id": "m"},
            [
                "attachment_id is missing",
                "name is missing",
                "type is missing",
                "size is missing",
                "reason is missing",
                "attempts is missing",
            ],
        ),
    ],
)
def test_entry_problems(entry: dict[str, Any], problems: list[str]) -> None:
    assert entry_problems(entry) == problems


def _message_line(record: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    line = {
        "kind": "message",
        "session_id": "s",
        "message_id": "m",
        "record": record,
        "digest": record_digest(record),
        "source": "sync",
        "seq": 5,
        "prev": ZERO_HASH,
        "at": "2026-01-01T00:00:00.5Z",
    }
    return {**line, **overrides}


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({}, None),
        ({"digest": "b" * 64}, "digest does not match the record"),
        ({"at": "2026-01-01 00:00:00"}, "at '2026-01-01 00:00:00' is not an RFC 3339 UTC time"),
        ({"at": "2026-01-01T00:00:00+02:00"}, "is not an RFC 3339 UTC time"),
        ({"supersedes": 5}, "supersedes 5 is not an earlier line"),
        ({"supersedes": 4}, None),
    ],
)
def test_line_problems(overrides: dict[str, Any], problem: str | None) -> None:
    problems = line_problems(_message_line({"message_id": "m"}, **overrides))
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_line_problems_finds_a_jwt_left_in_the_record() -> None:
    record = {"attachments": [{"download_url": "https://h/x?jwt=secret"}]}
    assert line_problems(_message_line(record)) == ["record carries a jwt in a download_url"]


@pytest.mark.parametrize("line", [b"[1]", b"1", b'"x"', b"{bad", b'{"a":NaN}', b"\xff"])
def test_parse_line_rejects(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_line(line)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


ints = st.integers(min_value=-(2**70), max_value=2**70)


hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
# What utc_now_rfc3339 returns, from any instant it can see.
stamps = st.datetimes(timezones=st.just(UTC)).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


@given(
    ids=st.tuples(st.text(), st.text()),
    record=st.dictionaries(st.text(), json_values, max_size=5),
    digest=hex64,
    prev=hex64,
    at=stamps,
    source=st.sampled_from(sorted(SOURCES)),
    seq=ints,
    supersedes=st.none() | ints,
)
def test_encode_message_line_equals_encode_line(
    ids: tuple[str, str],
    record: dict[str, Any],
    digest: str,
    prev: str,
    at: str,
    source: str,
    seq: int,
    supersedes: int | None,
) -> None:
    # Any ids and record (hostile text, lone surrogates, quotes) with the envelope values the
    # writer makes: the hand-made line must be the canonical one, byte for byte.
    session_id, message_id = ids
    entry: dict[str, Any] = {
        "kind": "message",
        "session_id": session_id,
        "message_id": message_id,
        "record": record,
        "digest": digest,
        "source": source,
    }
    if supersedes is not None:
        entry["supersedes"] = supersedes
    fast = encode_message_line(entry, seq, prev, at, canonical(record))
    assert fast == encode_line(entry, seq, prev, at)
