"""A download's total deadline, failure codes, and running out of descriptors (issue 18)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from archiver.downloads.fetch import CODES, Fetcher, FetchError, download_session, fetch_deadline
from tests.downloads.test_fetch import LOCAL, PAYLOAD, serve


@pytest.mark.parametrize(
    ("size", "max_bytes", "rate", "expected"),
    [
        (None, 1000, 10, 130.0),  # no size advertised: the most it may be
        (100, 1000, 10, 40.0),
        (5000, 1000, 10, 130.0),  # an advertised size over max_bytes is refused anyway
        (0, 1000, 10, 30.0),
    ],
)
def test_deadline_is_grace_plus_size_over_rate(
    size: int | None, max_bytes: int, rate: int, expected: float
) -> None:
    assert fetch_deadline(size, max_bytes, rate) == expected


def test_failure_codes_are_a_fixed_set() -> None:
    with pytest.raises(ValueError, match="not a failure code"):
        FetchError("file host answered 418 from files.example.com", code="418 from example")
    assert all(code.isidentifier() for code in CODES)


async def test_a_host_dripping_a_byte_a_second_is_stopped_at_the_deadline(
    tmp_path: Path,
) -> None:
    dripped = 0

    async def drip(request: web.Request) -> web.StreamResponse:
        nonlocal dripped
        response = web.StreamResponse()
        response.content_length = 40
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"x")
            dripped += 1
            await asyncio.sleep(1.0)
        return response

    async def whole(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 40)

    async def route(request: web.Request) -> web.StreamResponse:
        return await (drip(request) if request.path == "/drip" else whole(request))

    runner, port = await serve(route)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    try:
        async with download_session(LOCAL, 4) as http:
            # 40 bytes at 20 B/s plus 1 s of grace: 3 s; the host needs 40, and every single
            # read is well inside the 60 s read timeout.
            fetcher = Fetcher(
                http, LOCAL, tmp_dir=tmp, max_bytes=1 << 20, min_rate=20, deadline_grace=1.0
            )
            try:
                with pytest.raises(FetchError) as info:
                    await fetcher.fetch(f"http://127.0.0.1:{port}/drip", expected_size=40, dig=None)
                assert info.value.code == "deadline" and info.value.retryable
                assert "min_rate" in info.value.reason
                assert dripped < 40
                await asyncio.sleep(0.2)  # the sink's thread removes its file
                assert list(tmp.iterdir()) == []
                # Retried, the same attachment from a host that sends it comes whole.
                fetched = await fetcher.fetch(
                    f"http://127.0.0.1:{port}/whole", expected_size=40, dig=None
                )
                assert fetched.size == 40
            finally:
                fetcher.close()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """Every descriptor of the process in use (a real EMFILE), for the block's duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
    filler: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_running_out_of_descriptors_is_transient_and_names_the_operation(
    tmp_path: Path,
) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD)

    runner, port = await serve(ok)
    url = f"http://127.0.0.1:{port}/file"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    try:
        async with download_session(LOCAL, 4) as http:
            fetcher = Fetcher(http, LOCAL, tmp_dir=tmp, max_bytes=1 << 20, read_timeout=5)
            try:
                # A first fetch leaves a kept-alive connection: the second needs no socket,
                # only its temp file, which the sink's thread cannot open.
                first = await fetcher.fetch(url, expected_size=len(PAYLOAD), dig=None)
                first.path.unlink()
                with descriptors_exhausted(), pytest.raises(FetchError) as info:
                    await fetcher.fetch(url, expected_size=len(PAYLOAD), dig=None)
                assert info.value.resource and info.value.retryable
                assert info.value.code == "resources"
                assert "create a temp file in tmp/" in info.value.reason
                assert "fsync" not in info.value.reason
            finally:
                fetcher.close()
        async with download_session(LOCAL, 4) as http:
            # No connection to reuse: now the socket cannot be had.
            fetcher = Fetcher(http, LOCAL, tmp_dir=tmp, max_bytes=1 << 20, read_timeout=5)
            try:
                with descriptors_exhausted(), pytest.raises(FetchError) as info:
                    await fetcher.fetch(url, expected_size=len(PAYLOAD), dig=None)
                assert info.value.resource and info.value.code == "resources", info.value
                assert "connection to the file host" in info.value.reason
                # Resources back: the same fetch succeeds.
                again = await fetcher.fetch(url, expected_size=len(PAYLOAD), dig=None)
                assert again.size == len(PAYLOAD)
            finally:
                fetcher.close()
    finally:
        await runner.cleanup()
