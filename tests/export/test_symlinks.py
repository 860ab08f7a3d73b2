"""Links planted in --out while an export runs are never written through (issue 18)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from archiver.export import run
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
