"""Pure parts of the export: filter parsing and matching, text safety, CSV cells, file names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from archiver.export.files import attachment_file, session_file
from archiver.export.filters import ExportFilter, ExportUsageError, matches, parse_when
from archiver.export.text import csv_cell, html_name, html_text, visible, visible_name

SHA = "ab" * 32


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "date_time": "2024-05-01T10:00:00Z",
        "direction": "In",
        "sender": {"phone_number": "+12055550100"},
        "to_members": [{"phone_number": "+1 (205) 555-0199"}, {"phone_number": "+447700900123"}],
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("2024-05-01", False, datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01", True, datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)),
        ("2024-05-01T10:00:00Z", True, datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", False, datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00", False, datetime(2024, 5, 1, 10, tzinfo=UTC)),
        (" 2024-05-01 ", False, datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, end_of_day: bool, expected: datetime) -> None:
    assert parse_when(text, end_of_day=end_of_day) == expected


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "2024-02-30", "01/05/2024", ""])
def test_parse_when_refuses(text: str) -> None:
    with pytest.raises(ExportUsageError):
        parse_when(text, end_of_day=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "sideways"},
        {"formats": ("pdf",)},
        {"formats": ()},
        {"phones": ("call me",)},
        {
            "start": datetime(2024, 5, 2, tzinfo=UTC),
            "end": datetime(2024, 5, 1, tzinfo=UTC),
        },
    ],
)
def test_filter_refuses(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ExportUsageError):
        ExportFilter(**kwargs)


DAY = datetime(2024, 5, 1, tzinfo=UTC)
END = datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("flt", "rec", "session", "expected"),
    [
        (ExportFilter(), record(), "S", True),
        (ExportFilter(sessions=("S", "T")), record(), "T", True),
        (ExportFilter(sessions=("S",)), record(), "U", False),
        (ExportFilter(phones=("+12055550100",)), record(), "S", True),  # the sender
        (ExportFilter(phones=("+12055550199",)), record(), "S", True),  # formatted recipient
        (ExportFilter(phones=("+44 7700 900123",)), record(), "S", True),  # second recipient
        (ExportFilter(phones=("+12055550000", "447700900123")), record(), "S", True),
        (ExportFilter(phones=("+12055550000",)), record(), "S", False),
        (ExportFilter(phones=("5550100",)), record(), "S", False),  # digits must be whole
        (ExportFilter(phones=("+1",)), record(sender=None, to_members="x"), "S", False),
        (ExportFilter(direction="in"), record(), "S", True),
        (ExportFilter(direction="out"), record(), "S", False),
        (ExportFilter(direction="out"), record(direction="OUT"), "S", True),
        (ExportFilter(direction="in"), record(direction=None), "S", False),
        (ExportFilter(start=DAY, end=END), record(date_time="2024-05-01T00:00:00Z"), "S", True),
        (ExportFilter(start=DAY, end=END), record(date_time="2024-05-01T23:59:59Z"), "S", True),
        (ExportFilter(start=DAY, end=END), record(date_time="2024-05-02T00:00:00Z"), "S", False),
        (ExportFilter(start=DAY, end=END), record(date_time="2024-04-30T23:59:59Z"), "S", False),
        (ExportFilter(start=DAY), record(date_time="2030-01-01T00:00:00Z"), "S", True),
        (ExportFilter(end=END), record(date_time="not a time"), "S", False),
        (ExportFilter(end=END), record(date_time=12), "S", False),
        (ExportFilter(), record(date_time=None, sender=[], direction=7), "S", True),
        (ExportFilter(direction="in", phones=("+12055550000",)), record(), "S", False),
    ],
)
def test_matches(flt: ExportFilter, rec: dict[str, Any], session: str, expected: bool) -> None:
    assert matches(flt, session, rec) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("two\nlines\tand\r\n", "two\nlines\tand\r\n"),
        ("nul\x00byte", "nul[U+0000]byte"),
        ("evil\u202egpj.exe", "evil[U+202E]gpj.exe"),
        ("iso\u2066late\u2069", "iso[U+2066]late[U+2069]"),
        ("esc\x1b[31m", "esc[U+001B][31m"),
        ("c1\x85", "c1[U+0085]"),
        ("cut\ud83d", "cut[U+D83D]"),
        ("family 👨\u200d👩\u200d👧 ok", "family 👨\u200d👩\u200d👧 ok"),  # joiners stay
        ("عربى \u200f", "عربى \u200f"),
    ],
)
def test_visible(text: str, expected: str) -> None:
    assert visible(text) == expected


def test_visible_name_also_shows_line_breaks() -> None:
    assert visible_name("a\nb\tc") == "a[U+000A]b[U+0009]c"


def test_html_escapes_and_boxes() -> None:
    out = html_text('<script>alert("x")</script> & \x00 \u202e')
    assert "<script>" not in out
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in out
    assert '<span class="ctl">U+0000</span>' in out
    assert '<span class="ctl">U+202E</span>' in out
    # The characters of a marker typed by a sender stay text, never become a box.
    assert html_text("[U+202E]") == "[U+202E]"
    assert html_name("a\nb") == 'a<span class="ctl">U+000A</span>b'
    assert html_name("'\"<>") == "&#x27;&quot;&lt;&gt;"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+12055550100", "'+12055550100"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("a=b", "a=b"),
        (" =1", " =1"),
        ("", ""),
        ("2024-05-01", "2024-05-01"),
    ],
)
def test_csv_cell_formula_guard(cell: str, expected: str) -> None:
    assert csv_cell(cell) == expected


@pytest.mark.parametrize(
    ("zoom_type", "name", "ext"),
    [
        ("PNG", "../../etc/passwd", "png"),
        ("JPG", "x", "jpg"),
        ("gif", "x", "gif"),
        ("OTHER", "report.PDF", "pdf"),
        ("OTHER", "page.html", "bin"),
        ("OTHER", "icon.svg", "bin"),
        ("OTHER", "../../etc/passwd", "bin"),
        ("OTHER", "..\\..\\boot.ini", "bin"),
        ("VIDEO", "clip.mp4\x00.html", "bin"),
        ("AUDIO", "voice.m4a", "m4a"),
        ("OTHER", "", "bin"),
    ],
)
def test_attachment_file_never_uses_the_name(zoom_type: str, name: str, ext: str) -> None:
    assert attachment_file(SHA, zoom_type, name) == f"files/{SHA}.{ext}"


def test_session_file_is_a_hash() -> None:
    name = session_file("../../etc/passwd\x00")
    assert name.startswith("sessions/") and name.endswith(".html")
    assert len(name) == len("sessions/") + 16 + len(".html")
    assert session_file("\ud800") != session_file("\ud801")  # lone surrogates do not crash
