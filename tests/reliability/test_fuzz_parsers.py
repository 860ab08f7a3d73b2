"""Hostile responses, fuzzed: a clear error or a whole result, never a crash, never a skip.

- The response parsers take any JSON value: they return every item they were given, or raise
  ZoomResponseError naming the endpoint; nothing else escapes.
- The client's body decoding takes any bytes (invalid UTF-8, nesting deeper than the parser's
  stack, huge strings): a JSON value or ZoomResponseError.
- The manifest writer takes any record a parser let through, or refuses it (ValueError,
  nothing written); whatever it wrote, the archive reopens (the start-up replay indexes every
  line again) and `verify` accepts it. A line the index cannot take would stop the daemon on
  every start: one hostile message would make the archive unusable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.errors import ZoomResponseError
from archiver.store.layout import prepare_root
from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from archiver.zoom.client import decode_body
from archiver.zoom.models import (
    attachments_of,
    parse_message,
    parse_session_page,
    parse_sync_page,
)

SYNC = "GET /phone/sms/sessions/{sessionId}/sync"
LIST = "GET /phone/sms/sessions"

# Every code point, lone surrogates included (JSON's \ud800 escapes decode to them), and the
# characters that hurt most made common: surrogates, NUL, separators, bidi overrides.
nasty = st.sampled_from(["\ud800", "\udfff", "\x00", "/", ".", "\\", "\u202e", "\n", "%"])
# Lists joined rather than st.text(alphabet): text() folds the alphabet into one set of code
# points, where the few nasty ones would almost never be drawn.
char = st.characters(exclude_categories=()) | nasty
any_text = st.lists(char, max_size=40).map("".join)
an_id = st.lists(char, min_size=1, max_size=20).map("".join)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=25,
)


def attachment() -> st.SearchStrategy[Any]:
    fields = st.fixed_dictionaries(
        {"id": an_id | an_id | an_id | json_values},
        optional={
            "name": any_text | json_values,
            "type": any_text | json_values,
            "size": json_values,
            "download_url": any_text
            | st.just("https://file.zoom.us/file/download/x?jwt=eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
        },
    )
    return fields | fields | fields | json_values


def message() -> st.SearchStrategy[Any]:
    fields = st.fixed_dictionaries(
        {"message_id": an_id | an_id | an_id | json_values},
        optional={
            "attachments": st.lists(attachment(), max_size=3) | json_values,
            "date_time": any_text,
            "message": any_text,
            "sender": json_values,
        },
    )
    return fields | fields | fields | json_values


def well_formed_message() -> st.SearchStrategy[dict[str, Any]]:
    """The shape a parser lets through, with hostile content in every field."""
    url = st.sampled_from(
        ["", "https://file.zoom.us/file/download/x?jwt=eyJhbGciOiJIUzI1NiJ9.e30.c2ln"]
    )
    att = st.fixed_dictionaries(
        {"id": an_id},
        optional={"name": any_text, "type": any_text, "size": json_values, "download_url": url},
    )
    return st.fixed_dictionaries(
        {"message_id": an_id},
        optional={
            "attachments": st.lists(att, max_size=3),
            "message": any_text,
            "sender": json_values,
            "date_time": any_text,
        },
    )


def page(key: str, item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    shaped = st.fixed_dictionaries(
        {key: st.lists(item, max_size=4) | json_values},
        optional={"sync_token": any_text | json_values, "next_page_token": json_values},
    )
    return shaped | json_values


@settings(max_examples=400, deadline=None)
@given(body=page("sms_histories", message()))
def test_sync_pages_parse_whole_or_raise(body: Any) -> None:
    try:
        parsed = parse_sync_page(body, SYNC, "s1")
    except ZoomResponseError as exc:
        assert exc.endpoint == SYNC and exc.session_id == "s1"
        return
    listed = body.get("sms_histories") or []
    assert parsed.messages == listed  # every message, in order: none skipped
    for record in parsed.messages:
        ids = {a["id"] for a in record.get("attachments") or []}
        assert {a.attachment_id for a in attachments_of(record)} == ids


@settings(max_examples=300, deadline=None)
@given(body=page("sms_sessions", st.fixed_dictionaries({"session_id": any_text}) | json_values))
def test_session_pages_parse_whole_or_raise(body: Any) -> None:
    try:
        parsed = parse_session_page(body, LIST)
    except ZoomResponseError:
        return
    assert len(parsed.sessions) == len(body.get("sms_sessions") or [])


@settings(max_examples=300, deadline=None)
@given(body=message())
def test_single_messages_parse_or_raise(body: Any) -> None:
    with contextlib.suppress(ZoomResponseError):
        assert parse_message(body, SYNC, "s1") is body  # kept as received, not rebuilt


hostile_bodies = st.one_of(
    st.binary(max_size=200),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 200_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(0, 2_000_000).map(lambda n: b'{"sms_histories":[],"x":"' + b"a" * n + b'"}'),
    json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [b"\xff\xfe{}", b'{"a":"\xed\xa0\x80"}', b"<html>502</html>", b"", b"NaN", b"1e999999"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(raw=hostile_bodies)
def test_any_body_decodes_or_raises_a_response_error(raw: bytes) -> None:
    try:
        decode_body(raw, SYNC, "s1")
    except ZoomResponseError as exc:
        assert "s1" in str(exc)


def test_nesting_deeper_than_the_parser_is_a_response_error() -> None:
    with pytest.raises(ZoomResponseError, match="not JSON"):
        decode_body(b"[" * 100_000 + b"]" * 100_000, SYNC, "s1")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=st.lists(well_formed_message() | message(), min_size=1, max_size=3))
def test_the_writer_takes_or_refuses_any_parsed_record_and_the_archive_always_reopens(
    archive: tuple[asyncio.AbstractEventLoop, ManifestWriter], records: list[Any]
) -> None:
    loop, writer = archive
    try:
        parsed = parse_sync_page({"sms_histories": records}, SYNC, "s1")
    except ZoomResponseError:
        return  # refused at the boundary: the session fails loudly, nothing is written
    seq = writer.seq
    try:
        loop.run_until_complete(writer.append_messages("s1", parsed.messages, "sync"))
    except ValueError:
        # Refused as a whole, nothing written: the sync path reports the session.
        assert writer.seq == seq
    assert not writer.failed


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """One archive for every example; afterwards it must reopen from scratch and verify."""
    root = tmp_path_factory.mktemp("fuzz") / "archive"
    loop = asyncio.new_event_loop()
    prepare_root(root)
    state = State.open(root)
    writer = loop.run_until_complete(ManifestWriter.open(root, state))
    try:
        yield loop, writer
        loop.run_until_complete(writer.close())
        state.close()
        _reopen_from_scratch(loop, root)
    finally:
        loop.close()


def _reopen_from_scratch(loop: asyncio.AbstractEventLoop, root: Path) -> None:
    for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
        (root / name).unlink(missing_ok=True)
    state = State.open(root)
    try:
        writer = loop.run_until_complete(ManifestWriter.open(root, state))
        loop.run_until_complete(writer.close())
    finally:
        state.close()
    report = verify_archive(root)
    assert report.ok, report.problems[:5]
    assert report.messages > 0


@pytest.mark.parametrize(
    "record",
    [
        {"message_id": "m\ud800"},
        {"message_id": "m", "attachments": [{"id": "\udfffa"}]},
    ],
)
def test_ids_that_utf8_cannot_carry_refuse_the_page(record: dict[str, Any]) -> None:
    # Every later lookup by such an id (SQLite, the download ledger) would fail: the page is
    # refused loudly here instead, and the session reported, never silently thinned.
    with pytest.raises(ZoomResponseError, match="lone surrogate"):
        parse_sync_page({"sms_histories": [{"message_id": "ok"}, record]}, SYNC, "s1")


def test_a_session_id_that_utf8_cannot_carry_refuses_the_list() -> None:
    with pytest.raises(ZoomResponseError, match="lone surrogate"):
        parse_session_page({"sms_sessions": [{"session_id": "s\ud800"}]}, LIST)


async def test_what_the_writer_takes_verifies_and_what_would_not_is_refused(
    tmp_path: Path,
) -> None:
    """A lone surrogate is archived as received (a \\u escape that reads back the same); two
    that form a pair would read back as one character, so the line would not match its
    digest: refused, nothing written. Found by the fuzz test above."""
    root = tmp_path / "archive"
    prepare_root(root)
    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        await writer.append_messages("s", [{"message_id": "lone", "text": "cut \ud800"}], "sync")
        seq = writer.seq
        with pytest.raises(ValueError, match="surrogate pair"):
            await writer.append_messages(
                "s", [{"message_id": "pair", "text": "\ud800\udc00"}], "sync"
            )
        assert writer.seq == seq and not writer.failed
    finally:
        await writer.close()
        state.close()
    report = verify_archive(root)
    assert report.ok, report.problems
    assert report.messages == 1
