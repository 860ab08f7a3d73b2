"""ROOT/LOCK: a second process on the same root is refused, and the lock dies with its holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.errors import ArchiveLockedError
from archiver.store.lock import ArchiveLock

HOLDER = """
import sys
from pathlib import Path
from archiver.store.lock import ArchiveLock
with ArchiveLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_second_process_is_refused_until_the_first_exits(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(ArchiveLockedError) as refused, ArchiveLock(root):
            pass
        message = str(refused.value)
        assert str(root) in message and f"pid {holder.pid}" in message
        assert "stop that process" in message
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    with ArchiveLock(root) as lock:
        assert lock.held
        assert (root / "LOCK").read_text() == f"{os.getpid()}\n"


def test_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    holder.kill()
    holder.wait(timeout=30)
    with ArchiveLock(root):
        pass


def test_release_and_reacquire_in_process(tmp_path: Path) -> None:
    lock = ArchiveLock(tmp_path)
    lock.acquire()
    with pytest.raises(ArchiveLockedError), ArchiveLock(tmp_path):
        pass
    lock.release()
    assert not lock.held
    with ArchiveLock(tmp_path):
        pass


@pytest.mark.parametrize("where", ["a_file", "under_a_file"])
def test_a_root_that_is_a_file_is_a_config_error(tmp_path: Path, where: str) -> None:
    # Review of issue 13: FileExistsError / NotADirectoryError escaped as a traceback (exit 1).
    from archiver.errors import ConfigError

    (tmp_path / "file").write_text("x")
    root = tmp_path / "file" if where == "a_file" else tmp_path / "file" / "archive"
    with pytest.raises(ConfigError, match="cannot be the archive root") as info:
        ArchiveLock(root).acquire()
    assert info.value.key == "archive.root"
    assert (tmp_path / "file").read_text() == "x"
