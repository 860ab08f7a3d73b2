"""Hash and write one download's bytes in a thread of its own, fed by the event loop.

The event loop only receives (aiohttp) and hands each chunk over: no SHA-256, no write and no
executor round trip per chunk there, so receiving, hashing and writing overlap, and the loop
stays free for sync work while large attachments stream. The chunks queued but not yet written
are bounded (`HIGH_WATER`): past it, `write` waits until the thread is down to `LOW_WATER`.

A failure of the local disk surfaces from the next `write` or from `finish` as the `OSError`
itself; `abort` stops the thread without an fsync. Only one task may feed a sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading
from concurrent.futures import Executor
from pathlib import Path
from typing import Final

HIGH_WATER: Final = 8 * 1024 * 1024
LOW_WATER: Final = 2 * 1024 * 1024
WRITEBACK_STEP: Final = 16 * 1024 * 1024
_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_FADVISE: Final = getattr(os, "posix_fadvise", None)


def _start_writeback(fd: int, offset: int, length: int) -> int:
    """Start writing `length` bytes at `offset` to disk now, without waiting, and let them
    leave the page cache once written; the next offset. An attachment is written once and
    rarely read again: this keeps a large download from crowding out what the machine is
    using, and leaves the final fsync little to wait for. (Linux: POSIX_FADV_DONTNEED starts
    the writeback of dirty pages; where it is only a hint, nothing changes but the cache.)"""
    if _FADVISE is not None:
        _FADVISE(fd, offset, length, os.POSIX_FADV_DONTNEED)
    return offset + length


class _Stop:
    """Queue sentinels: FINISH fsyncs and closes; ABORT closes at once."""


FINISH: Final = _Stop()
ABORT: Final = _Stop()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class FileSink:
    """Writes chunks to a new file `path` and hashes them, in a thread of `executor`."""

    def __init__(self, path: Path, executor: Executor) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[bytes | _Stop] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # bytes queued, not yet written; under _lock
        self._blocked = False  # the feeder waits for room; under _lock
        self._ended = False  # the thread has stopped; under _lock
        self._room = asyncio.Event()
        self._aborted = False
        self._done = self._loop.run_in_executor(executor, self._drain)

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        with self._lock:
            ended = self._ended
            self._pending += len(chunk)
            full = self._pending >= HIGH_WATER and not ended
            if full:
                self._blocked = True
                self._room.clear()
        if ended:  # the thread stopped early (a disk error): raise what stopped it
            await self._done
            raise RuntimeError("the sink is closed")
        self._queue.put(chunk)
        if full:
            # The thread wakes us below LOW_WATER, or as it ends: it cannot have ended
            # unseen, since `ended` was read under the same lock that it sets it under.
            await self._room.wait()
            if self._done.done():
                await self._done

    async def finish(self) -> str:
        """Flush, fsync and close; the hex SHA-256 of everything written."""
        self._queue.put(FINISH)
        await self._done
        return self.digest.hexdigest()

    def abort(self) -> None:
        """Stop without an fsync; the thread closes and removes the file soon."""
        self._aborted = True
        self._queue.put(ABORT)
        # Nobody awaits the thread now: fetch its outcome so asyncio does not log it as lost.
        self._done.add_done_callback(_retrieve)

    # --- the thread ----------------------------------------------------------------------

    def _drain(self) -> None:
        try:
            fd = os.open(self.path, _FLAGS, 0o666)  # as open(): the umask decides
            try:
                finished = self._consume(fd)
            finally:
                os.close(fd)
            if not finished:
                # The feeder may have removed the file before this thread created it.
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        finally:
            with self._lock:
                self._ended = True
            self._wake()  # a feeder waiting for room must see the end

    def _consume(self, fd: int) -> bool:
        """Write until FINISH (then fsync: True) or ABORT (False)."""
        written = flushed = 0
        while True:
            chunk = self._queue.get()
            if chunk is FINISH and not self._aborted:
                os.fsync(fd)
                return True
            if isinstance(chunk, _Stop) or self._aborted:
                return False
            self.digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            written += len(chunk)
            if written - flushed >= 2 * WRITEBACK_STEP:
                flushed = _start_writeback(fd, flushed, WRITEBACK_STEP)
            with self._lock:
                self._pending -= len(chunk)
                wake = self._blocked and self._pending <= LOW_WATER
                if wake:
                    self._blocked = False
            if wake:
                self._wake()

    def _wake(self) -> None:
        # RuntimeError: the loop has closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._room.set)
