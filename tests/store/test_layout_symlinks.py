"""ROOT's fixed names are never followed when they are symbolic links (issue 18)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from archiver.errors import ConfigError
from archiver.store.layout import FIXED_NAMES, prepare_root
from archiver.store.lock import ArchiveLock
from tests.helpers import write_config

FAKE_ZOOM = {
    "api_url": "http://127.0.0.1:9/v2",
    "oauth_url": "http://127.0.0.1:9/oauth/token",
    "account_id": "acct",
    "client_id": "client",
    "client_secret": "secret",
}


def victim(tmp_path: Path) -> Path:
    folder = tmp_path / "victim"
    (folder / "keep").mkdir(parents=True)
    (folder / "precious.txt").write_text("not the archive's\n")
    (folder / "keep" / "inner.txt").write_text("nor this\n")
    return folder


def untouched(folder: Path) -> bool:
    return (folder / "precious.txt").read_text() == "not the archive's\n" and (
        folder / "keep" / "inner.txt"
    ).exists()


@pytest.mark.parametrize("name", [n for n in FIXED_NAMES if n != "blobs/sha256"])
def test_prepare_root_refuses_each_linked_name(tmp_path: Path, name: str) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    target = victim(tmp_path)
    (root / name).symlink_to(target if "." not in name and name != "LOCK" else target / "x")
    with pytest.raises(ConfigError, match=f"{root / name} is a symbolic link"):
        prepare_root(root)
    assert untouched(target)


def test_links_inside_tmp_are_removed_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    prepare_root(root)
    target = victim(tmp_path)
    (root / "tmp" / "link-to-dir").symlink_to(target)
    (root / "tmp" / "sub").mkdir()
    (root / "tmp" / "sub" / "link").symlink_to(target)
    (root / "tmp" / "x.part").write_bytes(b"partial")
    prepare_root(root)
    assert list((root / "tmp").iterdir()) == []
    assert untouched(target)


def test_the_daemon_refuses_a_linked_tmp_with_exit_2_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    target = victim(tmp_path)
    (root / "tmp").symlink_to(target)
    config = write_config(tmp_path, FAKE_ZOOM, root=root)
    done = subprocess.run(
        [sys.executable, "-m", "archiver", "run", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{root / 'tmp'} is a symbolic link" in done.stderr
    assert untouched(target)


@pytest.mark.parametrize("name", ["LOCK", "manifest"])
def test_the_lock_refuses_links_before_it_opens_anything(tmp_path: Path, name: str) -> None:
    """The lock is taken first at start (before the manifest check and prepare_root): a LOCK
    linked to a file must not have that file truncated, a linked manifest/ not be read."""
    root = tmp_path / "archive"
    root.mkdir()
    target = victim(tmp_path)
    (root / name).symlink_to(target / "precious.txt" if name == "LOCK" else target)
    with pytest.raises(ConfigError, match=f"{root / name} is a symbolic link"):
        ArchiveLock(root).acquire()
    assert untouched(target)


def test_a_lock_file_that_turns_into_a_link_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    target = victim(tmp_path)
    lock = ArchiveLock(root)
    # A link planted between the check and the open: O_NOFOLLOW refuses it.
    (root / "LOCK").symlink_to(target / "precious.txt")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        lock._open()
    assert untouched(target)


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_linked_sqlite_sidecar_is_refused_before_the_state_opens(
    tmp_path: Path, suffix: str
) -> None:
    """Fails on 077c09d: the sidecars were not fixed names, and State.open died with a bare
    sqlite3.OperationalError naming no path."""
    root = tmp_path / "archive"
    root.mkdir()
    target = victim(tmp_path)
    (root / f"state.sqlite3{suffix}").symlink_to(target / "precious.txt")
    with pytest.raises(ConfigError, match=f"state.sqlite3{suffix} is a symbolic link"):
        ArchiveLock(root).acquire()
    with pytest.raises(ConfigError, match=f"state.sqlite3{suffix} is a symbolic link"):
        prepare_root(root)
    assert untouched(target)


def test_a_new_segment_and_a_checkpoint_wait_out_a_lack_of_descriptors(tmp_path: Path) -> None:
    """Out of descriptors (a hostile client can make it so) is no broken disk: the segment
    rollover and the checkpoint note wait and go on once descriptors are back. Fails on
    077c09d: StorageError 'writing manifest/000001.jsonl failed: Too many open files'."""
    import threading

    from archiver.store.checkpoint import note_name, write_note
    from archiver.store.segments import SegmentAppender
    from tests.downloads.test_deadline import descriptors_exhausted

    root = tmp_path / "archive"
    prepare_root(root)
    appender = SegmentAppender(root / "manifest", 1, 0, 1 << 20)  # no file yet: it opens one
    results: list[object] = []

    def work() -> None:
        try:
            appender.append([b'{"seq":1}'])
            results.append(write_note(root, 1, b"a note\n"))
        except BaseException as exc:
            results.append(exc)

    with descriptors_exhausted():
        worker = threading.Thread(target=work)
        worker.start()
        worker.join(0.5)  # still waiting for a descriptor
        assert worker.is_alive() and results == []
    worker.join(30)
    appender.close()
    assert results == [root / "checkpoints" / note_name(1)], results
    assert (root / "manifest" / "000001.jsonl").read_bytes() == b'{"seq":1}\n'
