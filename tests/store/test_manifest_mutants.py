"""Edges of store/manifest.py that `make mutate` found untested (issue 17, docs/TESTING.md):
which surrogates `canonical` escapes, and the one case it must refuse."""

from __future__ import annotations

import json

import pytest

from archiver.store.manifest import canonical


@pytest.mark.parametrize(
    "pair",
    ["\ud83d\ude00", "\ud800\udc00", "\udbff\udfff", "a\ud800\udfffb", "\ud800\udc00\ud800"],
)
def test_a_surrogate_pair_held_as_two_code_points_is_refused(pair: str) -> None:
    # Written as two escapes it would parse back as one character: the digest would not match.
    with pytest.raises(
        ValueError, match=r"^a surrogate pair held as two code points cannot be archived$"
    ):
        canonical({"text": pair})


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("\ud800", "\\ud800"),  # each end of the high range, alone
        ("\udbff", "\\udbff"),
        ("\udc00", "\\udc00"),  # and of the low range
        ("\udfff", "\\udfff"),
        ("\ude00\ud83d", "\\ude00\\ud83d"),  # low before high: no pair
        ("\ud800\ud800", "\\ud800\\ud800"),  # two highs
        ("\udc00\udc00", "\\udc00\\udc00"),  # two lows
        ("x\ud83dy\ude00", "x\\ud83dy\\ude00"),  # apart: each lone
    ],
)
def test_lone_surrogates_are_escaped_each_and_parse_back_the_same(text: str, escaped: str) -> None:
    line = canonical({"text": text})
    assert line == b'{"text":"' + escaped.encode() + b'"}'
    assert json.loads(line)["text"] == text
    assert canonical(json.loads(line)) == line
