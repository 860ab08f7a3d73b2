"""The export end to end on small archives: selection, versions, outputs and export.json."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from archiver.export import ExportUsageError
from archiver.export.csvout import COLUMNS
from archiver.export.files import session_file
from tests.export.archive import Archive, attachment_ref, png
from tests.export.helpers import check_hashes, csv_rows, export, ids, manifest, page_of


def test_writes_every_format_and_hashes_every_file(sample: Archive, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export(sample.root, out)
    data = check_hashes(out)
    assert {e["path"] for e in data["files"]} >= {
        "index.html",
        "messages.csv",
        "messages.jsonl",
        session_file("S1"),
        session_file("S2"),
    }
    assert data["archive"]["last_seq"] == sample.seq == result.last_seq
    assert data["archive"]["chain_head"] == sample.prev == result.head
    assert data["archive"]["unfinished_tail"] is False
    assert data["filter"]["formats"] == ["html", "csv", "jsonl"]
    assert data["counts"]["messages"] == 4
    assert data["counts"]["sessions"] == 2
    assert data["problems"] == []
    assert not (out / ".export-index.sqlite3").exists()


def test_latest_version_by_default_and_history_on_request(sample: Archive, tmp_path: Path) -> None:
    export(sample.root, tmp_path / "latest")
    rows = {row["message_id"]: row for row in csv_rows(tmp_path / "latest")}
    assert rows["m3"]["text"] == "final"
    assert (rows["m3"]["version"], rows["m3"]["versions"], rows["m3"]["latest"]) == (
        "2",
        "2",
        "true",
    )
    assert "draft" not in page_of(tmp_path / "latest", "S1")

    export(sample.root, tmp_path / "all", all_versions=True)
    history = [r for r in csv_rows(tmp_path / "all") if r["message_id"] == "m3"]
    assert [(r["text"], r["version"], r["latest"]) for r in history] == [
        ("draft", "1", "false"),
        ("final", "2", "true"),
    ]
    assert history[1]["supersedes"] == history[0]["seq"]
    page = page_of(tmp_path / "all", "S1")
    assert page.index("draft") < page.index("final")
    assert "superseded" in page


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["m1", "m2", "m3", "x1"]),
        ({"sessions": ("S2",)}, ["x1"]),
        ({"sessions": ("S2", "S1")}, ["m1", "m2", "m3", "x1"]),
        ({"sessions": ("nope",)}, []),
        ({"phones": ("+44 7700 900123",)}, ["x1"]),  # the sender only
        ({"phones": ("+12055550199",)}, ["m1", "m2", "m3"]),  # a recipient or the sender
        ({"direction": "out"}, ["m2"]),
        ({"direction": "in", "sessions": ("S1",)}, ["m1", "m3"]),
        ({"from": "2024-05-01", "to": "2024-05-01"}, ["m1", "m2"]),  # a whole day, inclusive
        ({"from": "2024-04-30T23:59:59Z", "to": "2024-05-01T09:58:01Z"}, ["m1", "x1"]),
        ({"from": "2024-05-02"}, ["m3"]),
        ({"to": "2024-04-30"}, ["x1"]),
    ],
)
def test_filters(
    sample: Archive, tmp_path: Path, kwargs: dict[str, object], expected: list[str]
) -> None:
    from archiver.export.filters import parse_when

    if "from" in kwargs:
        kwargs["start"] = parse_when(str(kwargs.pop("from")), end_of_day=False)
    if "to" in kwargs:
        kwargs["end"] = parse_when(str(kwargs.pop("to")), end_of_day=True)
    export(sample.root, tmp_path / "out", **kwargs)
    assert sorted(ids(tmp_path / "out")) == expected
    jsonl = (tmp_path / "out" / "messages.jsonl").read_bytes().splitlines()
    exported = {json.loads(line)["message_id"] for line in jsonl}
    assert exported == set(expected)


def test_filter_looks_at_the_latest_version(archive: Archive, tmp_path: Path) -> None:
    first = archive.message("S", "m", when="2024-05-01T10:00:00Z")
    archive.message("S", "m", when="2024-06-01T10:00:00Z", supersedes=first)
    from archiver.export.filters import parse_when

    may = parse_when("2024-05-01", end_of_day=False), parse_when("2024-05-31", end_of_day=True)
    export(archive.root, tmp_path / "a", start=may[0], end=may[1], all_versions=True)
    assert ids(tmp_path / "a") == []
    export(archive.root, tmp_path / "b", start=may[0], all_versions=True)
    assert ids(tmp_path / "b") == ["m", "m"]


def test_jsonl_lines_are_the_archive_lines_and_still_verify(
    sample: Archive, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    export(sample.root, out, sessions=("S1",))
    lines = (out / "messages.jsonl").read_bytes().split(b"\n")
    assert lines.pop() == b""  # every line ends in a newline
    seqs = []
    for raw in lines:
        obj = json.loads(raw)
        seqs.append(obj["seq"])
        assert raw == sample.lines[obj["seq"]]  # byte for byte
        # The chain: the archive's next line (or the head) holds this line's SHA-256.
        following = sample.lines.get(obj["seq"] + 1)
        expected = json.loads(following)["prev"] if following else sample.prev
        assert hashlib.sha256(raw).hexdigest() == expected
        if obj["kind"] == "message":
            record = json.dumps(
                obj["record"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )
            assert hashlib.sha256(record.encode()).hexdigest() == obj["digest"]
    kinds = [json.loads(raw)["kind"] for raw in lines]
    assert seqs == sorted(seqs)
    assert kinds.count("attachment") == 1 and kinds.count("attachment_failed") == 1
    assert "event" not in kinds
    assert len([k for k in kinds if k == "message"]) == 3  # m3's draft is not shown by default


def test_csv_columns_quoting_bom_and_formula_guard(archive: Archive, tmp_path: Path) -> None:
    text = '=HYPERLINK("http://evil")\n, "quoted", and a second line'
    archive.message(
        "S",
        "m",
        text=text,
        sender=("+12055550100", "@admin"),
        to=(("+1", "-x"), ("+2", "ok")),
        attachments=(attachment_ref("a", "=cmd|' /C calc'!A0"), attachment_ref("b", "b, c.png")),
    )
    sha = archive.attachment("S", "m", "a", b"one", name="=cmd", zoom_type="OTHER")
    export(archive.root, tmp_path / "plain", formats=("csv",))
    raw = (tmp_path / "plain" / "messages.csv").read_bytes()
    assert raw.startswith(b"seq,session_id,")  # no BOM unless asked
    assert raw.count(b"\r\n") == 2  # RFC 4180 record ends, after the header and the one row
    assert b'"' + b"'=HYPERLINK" in raw  # guarded and quoted (a comma, quotes and a newline)
    row = csv_rows(tmp_path / "plain")[0]
    assert tuple(row) == COLUMNS
    assert row["text"] == "'" + text
    assert row["sender_name"] == "'@admin"
    assert row["sender_number"] == "'+12055550100"
    assert row["recipient_names"] == "'-x\nok"
    assert row["attachment_names"] == "'=cmd|' /C calc'!A0\nb, c.png"
    assert row["attachment_sha256"] == f"{sha}\n"
    assert row["attachment_status"] == "archived\npending"
    assert row["attachment_count"] == "2"

    export(archive.root, tmp_path / "bom", formats=("csv",), csv_bom=True)
    raw_bom = (tmp_path / "bom" / "messages.csv").read_bytes()
    assert raw_bom.startswith("\ufeff".encode()) and raw_bom[3:] == raw
    with (tmp_path / "bom" / "messages.csv").open(encoding="utf-8-sig", newline="") as handle:
        assert next(csv.reader(handle))[0] == "seq"


def test_html_escapes_everything(archive: Archive, tmp_path: Path) -> None:
    hostile = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    archive.message(
        "<b>session</b>",
        "<i>id</i>",
        text=hostile + " evil\u202egpj.exe NUL\x00 end",
        sender=("+1<u>", '"><script>alert(1)</script>'),
        attachments=(attachment_ref("a", "<script>.png"),),
    )
    archive.attachment("<b>session</b>", "<i>id</i>", "a", png())
    out = tmp_path / "out"
    export(archive.root, out, formats=("html",))
    for page in (page_of(out, "<b>session</b>"), (out / "index.html").read_text()):
        lowered = page.lower()
        assert "<script" not in lowered and "<b>session" not in lowered and "<i>" not in lowered
        assert "\x00" not in page and "\u202e" not in page
        assert "onerror=alert" not in lowered.replace("&lt;img src=x onerror=alert", "")
    page = page_of(out, "<b>session</b>")
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    assert 'evil<span class="ctl">U+202E</span>gpj.exe' in page
    assert 'NUL<span class="ctl">U+0000</span> end' in page
    assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;.png" in page


def test_hostile_names_never_become_paths(archive: Archive, tmp_path: Path) -> None:
    evil = "../../../../tmp/evil"
    archive.message(
        evil,
        evil,
        attachments=(
            attachment_ref(evil, "../../outside.html", "OTHER"),
            attachment_ref("b", "/etc/passwd\x00.png", "PNG"),
        ),
    )
    archive.attachment(
        evil, evil, evil, b"<html>not an image</html>", name="../../outside.html", zoom_type="OTHER"
    )
    archive.attachment(evil, evil, "b", png(), name="x", zoom_type="PNG")
    out = tmp_path / "deep" / "out"
    before = {p.name for p in tmp_path.iterdir()}
    export(archive.root, out)
    assert {p.name for p in tmp_path.iterdir()} == before | {"deep"}
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["out"]
    allowed = re.compile(
        r"index\.html|export\.json|messages\.(csv|jsonl)|sessions/[0-9a-f]{16}\.html"
        r"|files/[0-9a-f]{64}\.(bin|png)"
    )
    on_disk = check_hashes(out)["files"]
    assert all(allowed.fullmatch(entry["path"]) for entry in on_disk), on_disk
    # The HTML-looking attachment got the neutral .bin: opened, it is never run as a page.
    assert any(entry["path"].endswith(".bin") for entry in on_disk)


def test_images_copied_and_linked_relatively(sample: Archive, tmp_path: Path) -> None:
    # The same picture in a second message is one file in the export.
    sample.message("S2", "x2", attachments=(attachment_ref("p2"),), when="2024-05-03T00:00:00Z")
    sha = sample.attachment("S2", "x2", "p2", png())
    out = tmp_path / "out"
    result = export(sample.root, out)
    copy = out / "files" / f"{sha}.png"
    assert copy.read_bytes() == png()
    assert f'<img src="../files/{sha}.png"' in page_of(out, "S1")
    assert f'<img src="../files/{sha}.png"' in page_of(out, "S2")
    assert result.counts["attachments_copied"] == 1
    # The size shown beside the hash is the archived file's, not the one Zoom announced.
    assert f"(PNG, {len(png())} bytes) sha256 <code>{sha}</code>" in page_of(out, "S1")
    s1 = page_of(out, "S1")
    assert "clip.mp4" in s1 and "not archived (failed: over max_bytes)" in s1
    assert "later.png" in page_of(out, "S2") and "not archived yet" in page_of(out, "S2")


def test_non_image_is_linked_not_inlined(archive: Archive, tmp_path: Path) -> None:
    archive.message("S", "m", attachments=(attachment_ref("a", "report.pdf", "OTHER"),))
    sha = archive.attachment("S", "m", "a", b"%PDF-1.4 fake", name="report.pdf", zoom_type="OTHER")
    export(archive.root, tmp_path / "out", formats=("html",))
    page = page_of(tmp_path / "out", "S")
    assert f'<a href="../files/{sha}.pdf">' in page and "<img" not in page


def test_blob_path_is_validated_before_reading(archive: Archive, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png())
    sha = hashlib.sha256(png()).hexdigest()
    archive.message("S", "m", attachments=(attachment_ref("a"), attachment_ref("b")))
    archive.attachment("S", "m", "a", png(), blob=f"../../{secret.name}")
    archive.attachment("S", "m", "b", png(), blob=str(secret))
    out = tmp_path / "out"
    result = export(archive.root, out)
    assert result.counts["problems"] == 2
    assert not (out / "files").exists()
    assert all("invalid blob path" in p for p in result.problems)
    assert manifest(out)["problems"] == result.problems
    assert sha not in page_of(out, "S") and "not archived (invalid" in page_of(out, "S")


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_bad_blob_is_a_problem_not_a_copy(archive: Archive, tmp_path: Path, damage: str) -> None:
    archive.message("S", "m", attachments=(attachment_ref("a"),))
    sha = archive.attachment("S", "m", "a", png())
    blob = archive.root / "blobs" / "sha256" / sha[:2] / sha
    if damage == "missing":
        blob.unlink()
    else:
        blob.write_bytes(png(rgb=b"\x00\xff\x00"))
    out = tmp_path / "out"
    result = export(archive.root, out)
    assert result.counts["problems"] == 1 and sha in result.problems[0]
    assert not (out / "files").exists() or not any((out / "files").iterdir())
    assert "not archived (missing" in page_of(out, "S")
    check_hashes(out)


def test_unfinished_last_line_is_left_out(sample: Archive, tmp_path: Path) -> None:
    with sample.segment(sample.seq + 1).open("ab") as handle:
        handle.write(b'{"kind":"message","seq":')
    result = export(sample.root, tmp_path / "out")
    assert result.last_seq == sample.seq
    assert manifest(tmp_path / "out")["archive"]["unfinished_tail"] is True


def test_empty_archive(tmp_path: Path) -> None:
    (tmp_path / "root" / "manifest").mkdir(parents=True)
    result = export(tmp_path / "root", tmp_path / "out")
    assert result.last_seq == 0 and result.head == "0" * 64
    assert "No message matched" in (tmp_path / "out" / "index.html").read_text()
    assert csv_rows(tmp_path / "out") == []


def test_refuses_unusable_folders(sample: Archive, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for root, out in [
        (sample.root, full),
        (sample.root, a_file),
        (sample.root, sample.root / "exports"),
        (sample.root, sample.root.parent),
        (tmp_path / "not-an-archive", tmp_path / "o"),
    ]:
        with pytest.raises(ExportUsageError):
            export(root, out)
    assert (full / "keep.txt").read_text() == "mine" and sorted(full.iterdir()) == [
        full / "keep.txt"
    ]
    assert not (sample.root / "exports").exists()
    (tmp_path / "empty").mkdir()
    export(sample.root, tmp_path / "empty")  # an existing empty folder is fine


def test_lone_surrogates_anywhere_do_not_stop_an_export(archive: Archive, tmp_path: Path) -> None:
    cut = "cut\ud83d"  # text split inside a UTF-16 pair upstream: valid JSON, not UTF-8
    archive.message(
        cut,
        cut,
        text=f"body {cut}",
        sender=("+1", cut),
        attachments=(attachment_ref(cut, f"{cut}.png"),),
    )
    sha = archive.attachment(cut, cut, cut, png(), name=cut)
    out = tmp_path / "out"
    result = export(archive.root, out, sessions=(cut,))
    assert result.counts["messages"] == 1 and result.counts["problems"] == 0
    page = page_of(out, cut)
    assert 'cut<span class="ctl">U+D83D</span>' in page and sha in page
    row = csv_rows(out)[0]
    assert row["session_id"] == row["text"][5:] == "cut[U+D83D]"
    assert row["attachment_sha256"] == sha
    jsonl = (out / "messages.jsonl").read_bytes()
    assert jsonl == archive.lines[1] + b"\n" + archive.lines[2] + b"\n"  # escapes kept as is
    check_hashes(out)


def test_a_bad_line_outside_the_selection_is_not_this_exports_problem(
    archive: Archive, tmp_path: Path
) -> None:
    archive.message("S", "m", attachments=(attachment_ref("a"),), sender=("+1", "A"))
    archive.attachment("S", "m", "a", png(), blob="../../elsewhere")
    archive.message("S", "n", sender=("+2", "B"))
    assert export(archive.root, tmp_path / "other", phones=("+2",)).counts["problems"] == 0
    assert export(archive.root, tmp_path / "this", phones=("+1",)).counts["problems"] == 1
