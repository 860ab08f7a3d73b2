"""Edges of store/lock.py that `make mutate` found untested (issue 17, docs/TESTING.md): what
the refusal says of the holder when ROOT/LOCK holds something other than its pid."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.errors import ArchiveLockedError
from archiver.store.lock import ArchiveLock


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"4242\n", "pid 4242"),
        (b"  77  \n", "pid 77"),  # spaces around: still the pid
        (b"\xff\xfe\x00garbage", "pid unknown"),  # not ASCII: no crash, no garbage shown
        (b"12ab\n", "pid unknown"),
        (b"", "pid unknown"),
        (b"1" * 40, "pid " + "1" * 32),  # read at most 32 bytes
    ],
)
def test_the_refusal_names_the_holders_pid_or_unknown(
    tmp_path: Path, content: bytes, named: str
) -> None:
    with ArchiveLock(tmp_path / "archive") as holder:
        holder.path.write_bytes(content)  # flock is advisory: what the file says is not
        with pytest.raises(ArchiveLockedError) as refused:
            ArchiveLock(tmp_path / "archive").acquire()
    message = str(refused.value)
    assert f"({named})" in message, message
