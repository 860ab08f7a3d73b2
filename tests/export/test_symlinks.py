"""Links planted in --out while an export runs are never written through (issue 18)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from archiver.export import run
from archiver.export.files import OutDir
from archiver.export.index import ExportIndex
from tests.export.archive import Archive
from tests.export.helpers import export


def plant_between_passes(monkeypatch: pytest.MonkeyPatch, plant: Callable[[], None]) -> None:
    """Run `plant` after pass 1 (the index is loaded), before pass 2 writes anything."""
    select = run.ExportIndex.select

    def hooked(self: run.ExportIndex, all_versions: bool) -> None:
        select(self, all_versions)
        plant()

    monkeypatch.setattr(run.ExportIndex, "select", hooked)


@pytest.mark.parametrize("folder", ["files", "sessions"])
def test_a_linked_output_folder_is_not_followed(
    sample: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()  # an existing empty folder is accepted, so others may write in it
    elsewhere.mkdir()
    plant_between_passes(monkeypatch, lambda: (out / folder).symlink_to(elsewhere))
    with pytest.raises(OSError, match="not a folder the export made"):
        export(sample.root, out)
    assert list(elsewhere.iterdir()) == []
    assert not (out / "export.json").exists()  # an export that did not finish says so


def test_linked_output_files_are_not_written_through(
    sample: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "victim.txt"
    victim.write_text("the neighbour's\n")

    def plant() -> None:
        for name in ("messages.csv", "messages.jsonl", "index.html", "export.json.part"):
            (out / name).symlink_to(victim)

    plant_between_passes(monkeypatch, plant)
    with pytest.raises(FileExistsError):
        export(sample.root, out)
    assert victim.read_text() == "the neighbour's\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.txt"]


def test_new_folders_are_private(sample: Archive, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(sample.root, out)
    for folder in (out, out / "files", out / "sessions"):
        assert folder.stat().st_mode & 0o077 == 0, folder
    assert (out / "export.json").stat().st_mode & 0o077 == 0


def plant_before_the_index(monkeypatch: pytest.MonkeyPatch, plant: Callable[[Path], None]) -> None:
    """Run `plant(out)` once --out was checked (empty), before the index is opened."""
    prepare = run._prepare_out

    def hooked(root: Path, out: Path) -> bool:
        created = prepare(root, out)
        plant(out)
        return created

    monkeypatch.setattr(run, "_prepare_out", hooked)


def test_a_link_planted_where_the_index_was_is_not_followed(
    sample: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    # A dangling link: SQLite, opening by name, would create the target outside the export.
    plant_before_the_index(
        monkeypatch, lambda out: (out / ".export-index.sqlite3").symlink_to(elsewhere / "x")
    )
    names_during_pass_1: list[list[str]] = []
    plant_between_passes(monkeypatch, lambda: names_during_pass_1.append(os.listdir(out)))
    export(sample.root, out)
    assert list(elsewhere.iterdir()) == []
    assert (out / ".export-index.sqlite3").is_symlink()
    # The index has no name in --out at any time: nothing there to be swapped for a link.
    assert names_during_pass_1 == [[".export-index.sqlite3"]]
    assert (out / "export.json").exists()


def test_the_index_file_is_made_through_the_descriptor_and_unlinked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    outdir = OutDir(out)
    index = ExportIndex(outdir.through_descriptor())
    try:
        # More than the index's page cache (8 MiB), so that SQLite spills to its file.
        index.db.execute("CREATE TABLE pad(x BLOB)")
        index.db.execute("BEGIN")
        index.db.executemany(
            "INSERT INTO pad VALUES (?)", ((os.urandom(4096),) for _ in range(4096))
        )
        index.db.execute("COMMIT")
        opened = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith(f"{out}/"):
                    opened.append((target, os.fstat(int(fd)).st_mode & 0o777))
        assert len(opened) == 1, opened
        target, mode = opened[0]
        assert target.endswith(" (deleted)"), target
        assert mode == 0o600
        assert os.listdir(out) == []
    finally:
        index.close()
        outdir.close()
    # SQLite's temporary folder is process-wide: it is cleared when the index closes.
    probe = sqlite3.connect(":memory:")
    assert probe.execute("PRAGMA temp_store_directory").fetchone() in (None, ("",))
    probe.close()
