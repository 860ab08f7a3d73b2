"""ROOT/LOCK: one daemon per archive root.

`flock` rather than a pid file alone: the kernel drops the lock when the holder dies (even by
SIGKILL), so a crash never leaves a stale lock for an operator to clean up. The pid written into
the file only serves the error message of the second process.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from archiver.errors import ArchiveLockedError, ConfigError
from archiver.store.layout import LOCK_FILE, refuse_symlinks


class ArchiveLock:
    """Exclusive, non-blocking lock on ROOT/LOCK. Use as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ArchiveLockedError naming the holder. Creates ROOT if needed."""
        if self._fd is not None:
            return
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Before anything is opened or written: a LOCK (or manifest/, tmp/...) planted as
            # a link would otherwise have its target truncated here, or read by the start-up
            # check.
            refuse_symlinks(self.root)
            fd = self._open()
        except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
            # ROOT is a file, under a file, or not ours: the configuration names a wrong place.
            raise ConfigError(
                f"{str(self.root)[:200]} cannot be the archive root: {exc.strerror}",
                key="archive.root",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise ArchiveLockedError(
                f"archive {self.root} is in use by another zoom-sms-archiver (pid {holder}): "
                "stop that process, or give this one a different archive root; the lock frees "
                "itself when its holder exits"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _open(self) -> int:
        # O_NOFOLLOW: a link planted after the check above is refused (ELOOP), not followed.
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)

    def release(self) -> None:
        """Give the lock up. The file stays: unlinking it lets two processes lock two inodes."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> ArchiveLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"
