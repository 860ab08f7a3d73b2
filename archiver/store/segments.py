"""The open end of the manifest: appends whole lines to the last segment, rotating at a size.

Durability order, which the start-up repair relies on: a segment's bytes are fsynced before the
next segment is created, and a new segment's directory entry is fsynced before its lines are
acknowledged. So after any crash only the tail of the last segment can be incomplete.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from typing import Final

from archiver.errors import StorageError
from archiver.store.crash import crash_point, die, reached
from archiver.store.layout import open_waiting
from archiver.store.manifest import segment_name

_SEGMENT_MODE: Final = 0o640


class SegmentAppender:
    """Appends to segment `segment` (length `size`) in `directory`. Used by one thread only."""

    def __init__(self, directory: Path, segment: int, size: int, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("segment_max_bytes must be positive")
        self._dir = directory
        self._segment, self._size, self._max = segment, size, max_bytes
        path = directory / segment_name(segment)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND) if path.exists() else None

    def append(self, lines: list[bytes]) -> None:
        """Write `lines` (without newlines) durably: one write and one fsync per segment
        touched. A line never straddles two segments; one longer than the limit gets a segment
        of its own. Raises StorageError; the caller must not try again (see writer.py)."""
        crash_point("manifest_before_write")
        groups: list[list[bytes]] = [[]]
        size = self._size
        for line in lines:
            if size > 0 and size + len(line) + 1 > self._max:
                groups.append([])
                size = 0
            groups[-1].append(line)
            size += len(line) + 1
        for i, group in enumerate(groups):
            if i > 0:  # the segment before is complete and fsynced: closed for good
                self.close()
                self._segment, self._size = self._segment + 1, 0
            if group:
                self._write(b"\n".join(group) + b"\n")

    def _write(self, data: bytes) -> None:
        segment = self._segment
        try:
            created = self._fd is None
            if self._fd is None:
                path = self._dir / segment_name(segment)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
                self._fd = open_waiting(path, flags, _SEGMENT_MODE)
            _write_all(self._fd, data)
            crash_point("manifest_before_fsync")
            os.fsync(self._fd)
            if created:
                _fsync_dir(self._dir)  # the new file's name must be as durable as its bytes
        except OSError as exc:
            if self._fd is not None:
                with suppress(OSError):  # best effort; the start-up repair does the rest
                    os.ftruncate(self._fd, self._size)
            self.close()
            raise StorageError(
                exc.errno, f"writing manifest/{segment_name(segment)} failed: {exc.strerror}"
            ) from exc
        self._size += len(data)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    if reached("manifest_mid_write"):
        os.write(fd, view[: len(view) // 2])
        die()
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = open_waiting(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
