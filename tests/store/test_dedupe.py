"""Table tests for the dedupe decisions (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from archiver.store.dedupe import plan_messages
from archiver.store.manifest import canonical, record_digest, strip_jwt
from tests.store.conftest import message, mms


def digest(record: dict[str, Any]) -> str:
    return record_digest(strip_jwt(record))


A, A2, B = message(1), message(1, text="edited"), message(2)


@pytest.mark.parametrize(
    ("known", "records", "expect"),
    [
        # (known versions, records, [(message_id, supersedes or None)], (new, changed, unchanged))
        ({}, [A, B], ([("msg-1", None), ("msg-2", None)], (2, 0, 0))),
        ({"msg-1": [(digest(A), 7)]}, [A], ([], (0, 0, 1))),
        ({"msg-1": [(digest(A), 7)]}, [A2], ([("msg-1", 7)], (0, 1, 0))),
        # every earlier version counts: content that flips back gets no line
        ({"msg-1": [(digest(A), 7), (digest(A2), 9)]}, [A], ([], (0, 0, 1))),
        # supersedes the latest line of the message
        (
            {"msg-1": [(digest(A), 9), (digest(message(1, text="x")), 7)]},
            [A2],
            ([("msg-1", 9)], (0, 1, 0)),
        ),
        # duplicates inside one page: identical, then changed (supersedes the planned seq)
        ({}, [A, A], ([("msg-1", None)], (1, 0, 1))),
        ({}, [A, A2, A], ([("msg-1", None), ("msg-1", 100)], (1, 1, 1))),
    ],
)
def test_plan(
    known: dict[str, list[tuple[str, int]]],
    records: list[dict[str, Any]],
    expect: tuple[list[tuple[str, int | None]], tuple[int, int, int]],
) -> None:
    plan = plan_messages("sess", records, "sync", {k: list(v) for k, v in known.items()}, 100)
    assert [(e["message_id"], e.get("supersedes")) for e in plan.entries] == expect[0]
    assert (plan.new, plan.changed, plan.unchanged) == expect[1]


def test_entries_carry_the_stripped_record_and_its_digest() -> None:
    record = mms(3, ["att-1"])
    plan = plan_messages("sess", [record], "webhook", {}, 1)
    (entry,) = plan.entries
    assert entry["record"]["attachments"][0]["download_url"] == (
        "https://file.zoom.us/file/download/att-1"
    )
    assert "jwt" in record["attachments"][0]["download_url"]  # the caller's copy is untouched
    assert entry["digest"] == record_digest(entry["record"])
    assert entry["source"] == "webhook"
    assert entry["session_id"] == "sess"
    assert plan.encoded[0] == canonical(entry["record"])


def test_a_new_jwt_alone_is_not_a_change() -> None:
    known: dict[str, list[tuple[str, int]]] = {}
    first = plan_messages("s", [mms(1, ["a"], jwt="one")], "sync", known, 1)
    again = plan_messages("s", [mms(1, ["a"], jwt="two")], "sync", known, 2)
    assert (first.new, again.unchanged) == (1, 1)
