"""FileSink: bytes and digest exact, memory bounded, nothing left behind, disk errors raised."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from archiver.downloads.sink import HIGH_WATER, FileSink

MIB = 1024 * 1024
T = TypeVar("T")


def chunks(count: int, size: int = MIB) -> list[bytes]:
    base = bytes(range(256)) * (size // 256)
    return [n.to_bytes(4, "big") + base[4:] for n in range(count)]


@pytest.fixture
def held_executor() -> Iterator[tuple[ThreadPoolExecutor, threading.Event]]:
    """A one-thread executor kept busy until the event is set: the sink's thread has not
    started yet, as on a machine where every download thread is taken."""
    executor = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    executor.submit(release.wait)
    yield executor, release
    release.set()
    executor.shutdown(wait=True)


async def test_bytes_and_digest_are_exact(tmp_path: Path) -> None:
    data = [*chunks(24), b"x", b"", b"tail" * 1000]
    with ThreadPoolExecutor() as executor:
        sink = FileSink(tmp_path / "f.part", executor)
        for chunk in data:
            await sink.write(chunk)
        sha = await sink.finish()
    whole = b"".join(data)
    assert sha == hashlib.sha256(whole).hexdigest()
    assert sink.size == len(whole)
    assert (tmp_path / "f.part").read_bytes() == whole


async def test_queued_bytes_are_bounded(
    tmp_path: Path, held_executor: tuple[ThreadPoolExecutor, threading.Event]
) -> None:
    executor, release = held_executor
    sink = FileSink(tmp_path / "f.part", executor)
    try:
        data = chunks(HIGH_WATER // MIB + 4)
        queued = 0
        for chunk in data:
            writing = asyncio.ensure_future(sink.write(chunk))
            await asyncio.sleep(0.01)
            if not writing.done():
                break  # the feeder waits: the writer thread has not taken anything yet
            queued += len(chunk)
        else:
            pytest.fail("the sink accepted every chunk with its thread stalled")
        assert queued + len(chunk) >= HIGH_WATER
        assert queued < HIGH_WATER
        release.set()  # the thread starts, drains below LOW_WATER, and the feeder goes on
        await asyncio.wait_for(writing, 10)
        for chunk in data[queued // MIB + 1 :]:
            await sink.write(chunk)
        sha = await asyncio.wait_for(sink.finish(), 10)
        assert sha == hashlib.sha256(b"".join(data)).hexdigest()
    finally:
        sink.abort()  # a no-op once finished; else the stalled thread would never end


async def test_abort_before_the_thread_starts_leaves_no_file(
    tmp_path: Path, held_executor: tuple[ThreadPoolExecutor, threading.Event]
) -> None:
    executor, release = held_executor
    path = tmp_path / "f.part"
    sink = FileSink(path, executor)
    await sink.write(b"abc")
    sink.abort()
    path.unlink(missing_ok=True)  # what the fetcher does: nothing there yet
    release.set()
    await asyncio.to_thread(executor.shutdown, wait=True)
    assert list(tmp_path.iterdir()) == []


async def test_abort_after_writing_removes_the_file(tmp_path: Path) -> None:
    with ThreadPoolExecutor() as executor:
        sink = FileSink(tmp_path / "f.part", executor)
        for chunk in chunks(3):
            await sink.write(chunk)
        await asyncio.sleep(0.05)
        sink.abort()
    assert list(tmp_path.iterdir()) == []


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """EFBIG past `limit` bytes (RLIMIT_FSIZE, SIGXFSZ ignored): a full disk without a mount
    (the daemon-level test mounts a real tmpfs)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


async def test_a_full_disk_surfaces_as_the_os_error(tmp_path: Path) -> None:
    with file_size_limit(2 * MIB), ThreadPoolExecutor() as executor:
        sink = FileSink(tmp_path / "f.part", executor)
        with pytest.raises(OSError) as info:  # from write or from finish
            for chunk in chunks(HIGH_WATER // MIB * 3):
                await asyncio.wait_for(sink.write(chunk), 10)
            await asyncio.wait_for(sink.finish(), 10)
    assert info.value.errno == errno.EFBIG


class LateReports(ThreadPoolExecutor):
    """Reports each finished call 0.3 s late: a sink's thread has ended (and woken any
    waiting feeder) but its future is not done yet, as on a busy event loop."""

    def submit(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> Future[T]:
        def late() -> T:
            try:
                return fn(*args, **kwargs)
            finally:
                time.sleep(0.3)

        return super().submit(late)


async def test_a_thread_that_ended_unreported_is_not_waited_for(tmp_path: Path) -> None:
    with file_size_limit(MIB), LateReports() as executor:
        sink = FileSink(tmp_path / "f.part", executor)
        await sink.write(chunks(1, 2 * MIB)[0])  # the thread fails at 1 MiB
        await asyncio.sleep(0.1)  # ...and has ended, its future not yet done
        with pytest.raises(OSError) as info:
            for chunk in chunks(HIGH_WATER // MIB + 2):
                # Past the high-water mark a feeder waits for room: the thread that would
                # make it will never run again, so the write must see that it ended.
                await asyncio.wait_for(sink.write(chunk), 10)
    assert info.value.errno == errno.EFBIG
