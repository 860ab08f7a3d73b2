"""The command as a real process: `python -m archiver.export.cli`, the parser the lead wires in."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.export.cli import add_export_arguments, filter_from_args
from tests.export.archive import Archive


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver.export.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_export_succeeds(sample: Archive, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run(sample.root, "--out", out, "--session", "S1", "--format", "csv", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    assert "3 message(s)" in done.stdout and sample.prev in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json",
        "messages.csv",
        "messages.jsonl",
    ]
    data = json.loads((out / "export.json").read_text())
    assert data["filter"]["sessions"] == ["S1"] and data["filter"]["formats"] == ["csv", "jsonl"]


@pytest.mark.parametrize(
    "args",
    [
        ["--from", "tomorrow"],
        ["--from", "2024-05-02", "--to", "2024-05-01"],
        ["--format", "pdf"],
        ["--direction", "up"],
        ["--phone", "n/a"],
    ],
)
def test_bad_usage_exits_2(sample: Archive, tmp_path: Path, args: list[str]) -> None:
    done = run(sample.root, "--out", tmp_path / "out", *args)
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "out").exists()


def test_refused_folders_exit_2(sample: Archive, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    done = run(sample.root, "--out", tmp_path / "full")
    assert done.returncode == 2 and "not empty" in done.stderr
    done = run(tmp_path / "nothing", "--out", tmp_path / "o")
    assert done.returncode == 2 and "not an archive" in done.stderr


def test_broken_chain_exits_1_naming_the_line(sample: Archive, tmp_path: Path) -> None:
    segment = sample.segment(6)
    segment.write_bytes(segment.read_bytes().replace(b"draft", b"DRAFT"))
    done = run(sample.root, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert f"{segment.name} line 3" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_problems_exit_1(archive: Archive, tmp_path: Path) -> None:
    from tests.export.archive import attachment_ref, png

    archive.message("S", "m", attachments=(attachment_ref("a"),))
    sha = archive.attachment("S", "m", "a", png())
    (archive.root / "blobs" / "sha256" / sha[:2] / sha).unlink()
    done = run(archive.root, "--out", tmp_path / "out")
    assert done.returncode == 1 and "problem" in done.stderr
    assert (tmp_path / "out" / "export.json").exists()  # the production exists, and says why


def test_parser_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    args = parser.parse_args(["root", "--out", "o", "--format", "csv", "--format", "csv"])
    flt = filter_from_args(args)
    assert flt.formats == ("csv",) and not flt.all_versions and flt.sessions == ()
    args = parser.parse_args(["root", "--out", "o", "--phone", "+1 205", "--phone", "+44"])
    assert filter_from_args(args).phones == ("+1 205", "+44")
