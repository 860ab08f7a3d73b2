"""Archive layout: folders, tmp cleaning, and paths built only from digests and numbers."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from archiver.store.layout import (
    blob_path,
    blob_relpath,
    list_segments,
    missing_segments,
    prepare_root,
)


def test_prepare_root_creates_private_folders_and_empties_tmp(tmp_path: Path) -> None:
    root = tmp_path / "a" / "archive"
    prepare_root(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for sub in ("manifest", "blobs/sha256", "tmp"):
        assert (root / sub).is_dir()
    (root / "tmp" / "partial.download").write_bytes(b"x")
    (root / "tmp" / "dir").mkdir()
    (root / "tmp" / "dir" / "f").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (root / "tmp" / "link").symlink_to(outside)
    prepare_root(root)
    assert list((root / "tmp").iterdir()) == []
    assert outside.read_bytes() == b"keep"


def test_blob_paths() -> None:
    digest = "0123456789abcdef" * 4
    assert blob_relpath(digest) == f"blobs/sha256/01/{digest}"
    assert blob_path(Path("/r"), digest) == Path(f"/r/blobs/sha256/01/{digest}")


@pytest.mark.parametrize(
    "bad", ["", "../" + "a" * 61, "A" * 64, "a" * 63, "a" * 65, "g" * 64, "a" * 63 + "/"]
)
def test_blob_relpath_refuses_anything_but_a_digest(bad: str) -> None:
    with pytest.raises(ValueError):
        blob_relpath(bad)


@pytest.mark.parametrize(
    ("numbers", "gaps"),
    [
        ([], []),
        ([1, 2, 3], []),
        ([2, 3], [(1, 1)]),
        ([1, 4, 5, 9], [(2, 3), (6, 8)]),
        ([1, 10**9], [(2, 10**9 - 1)]),
    ],
)
def test_missing_segments(numbers: list[int], gaps: list[tuple[int, int]]) -> None:
    assert missing_segments(numbers) == gaps


def test_list_segments_ignores_other_files(tmp_path: Path) -> None:
    for name in ("000002.jsonl", "000001.jsonl", "1.jsonl", "000003.jsonl.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "000004.jsonl").mkdir()
    assert [n for n, _ in list_segments(tmp_path)] == [1, 2]
    assert list_segments(tmp_path / "missing") == []
