"""write_note over a name that already exists: only a regular note for the same head is
kept as it is; anything else there (a link, a folder, damage) is evidence and raises."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver.store import checkpoint
from archiver.store.layout import prepare_root

SEQ = 7
HEAD = "ab" * 32
NOT_A_NOTE = r"says head \?{16}\.\.\., not abababab"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    prepare_root(root)
    (root / "checkpoints").mkdir(mode=0o700)
    return root


def note(time: str = "2026-12-05T00:00:00Z") -> bytes:
    key = Ed25519PrivateKey.generate()
    return checkpoint.sign(key, checkpoint.origin_for("acct"), SEQ, HEAD, time)


def target(root: Path) -> Path:
    return root / "checkpoints" / checkpoint.note_name(SEQ)


def test_a_link_to_a_matching_note_is_not_taken_for_the_note(root: Path, tmp_path: Path) -> None:
    """O_NOFOLLOW: a link at the note's name is not the note, whatever it points at."""
    outside = tmp_path / "outside.note"
    outside.write_bytes(original := note())
    target(root).symlink_to(outside)
    with pytest.raises(checkpoint.CheckpointConflict, match=NOT_A_NOTE):
        checkpoint.write_note(root, SEQ, note("2026-12-05T01:00:00Z"))
    assert target(root).is_symlink() and outside.read_bytes() == original


@pytest.mark.parametrize("damage", ["folder", "garbage", "empty"])
def test_what_is_no_note_is_a_conflict_and_stays(root: Path, damage: str) -> None:
    path = target(root)
    if damage == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"" if damage == "empty" else b"\xff\xfe not a note\n")
    before = path.is_dir() or path.read_bytes()
    with pytest.raises(checkpoint.CheckpointConflict, match=NOT_A_NOTE):
        checkpoint.write_note(root, SEQ, note())
    assert (path.is_dir() or path.read_bytes()) == before
    assert not list((root / "tmp").iterdir())


def test_a_matching_note_signed_at_another_time_is_kept(root: Path) -> None:
    first = note()
    assert checkpoint.write_note(root, SEQ, first) == target(root)
    assert checkpoint.write_note(root, SEQ, note("2030-01-01T00:00:00Z")) == target(root)
    assert target(root).read_bytes() == first
    assert os.stat(target(root)).st_nlink == 1
