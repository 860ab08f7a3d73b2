"""FileSink: bytes and digest exact, memory bounded, nothing left behind, disk errors raised."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import resource
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from archiver.downloads.sink import HIGH_WATER, FileSink

MIB = 1024 * 1024


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


async def test_a_full_disk_surfaces_as_the_os_error(tmp_path: Path) -> None:
    # EFBIG from RLIMIT_FSIZE stands in for ENOSPC (the daemon-level test mounts a tmpfs).
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MIB, old_limit[1]))
    try:
        with ThreadPoolExecutor() as executor:
            sink = FileSink(tmp_path / "f.part", executor)
            with pytest.raises(OSError) as info:  # from write or from finish
                for chunk in chunks(HIGH_WATER // MIB * 3):
                    await asyncio.wait_for(sink.write(chunk), 10)
                await asyncio.wait_for(sink.finish(), 10)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.errno == errno.EFBIG
