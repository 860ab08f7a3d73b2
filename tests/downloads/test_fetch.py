"""The streaming fetcher against real local servers: every hostile case refused, nothing kept."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from archiver.downloads.fetch import Fetcher, FetchError, download_session
from archiver.downloads.sink import HIGH_WATER
from archiver.downloads.urls import UrlPolicy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOCAL = UrlPolicy(("http", "https"), ("127.0.0.1", "localhost"), allow_private_addresses=True)
PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        runner, port = await serve(handler)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def fetch(
    tmp_path: Path,
    url: str,
    *,
    policy: UrlPolicy = LOCAL,
    max_bytes: int = 1 << 20,
    size: int | None = None,
    dig: str | None = None,
):  # type: ignore[no-untyped-def]
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    async with download_session(policy, 4) as http:
        fetcher = Fetcher(http, policy, tmp_dir=tmp, max_bytes=max_bytes, read_timeout=5)
        try:
            return await fetcher.fetch(url, expected_size=size, dig=dig)
        finally:
            fetcher.close()


def leftovers(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "tmp").iterdir())


async def test_streams_hashes_and_fsyncs(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="image/png")

    base = await server(ok)
    fetched = await fetch(tmp_path, f"{base}/file?jwt=x", size=len(PAYLOAD))
    assert fetched.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.path.parent == tmp_path / "tmp"


@pytest.mark.parametrize("declared", [True, False])
async def test_max_bytes_enforced_while_streaming(tmp_path: Path, server, declared: bool) -> None:  # type: ignore[no-untyped-def]
    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if declared:
            response.content_length = 10 * len(PAYLOAD)
        await response.prepare(request)
        for _ in range(10):
            await response.write(PAYLOAD)
        return response

    base = await server(big)
    with pytest.raises(FetchError, match="max_bytes") as info:
        await fetch(tmp_path, f"{base}/f", max_bytes=3 * len(PAYLOAD))
    assert not info.value.retryable
    assert leftovers(tmp_path) == []


async def test_json_error_body_with_200_is_not_the_file(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    async def quirk(_: web.Request) -> web.Response:
        return web.json_response({"code": 124, "message": "Invalid access token."})

    base = await server(quirk)
    with pytest.raises(FetchError, match="error document") as info:
        await fetch(tmp_path, f"{base}/f", size=5000)
    assert info.value.refresh
    assert leftovers(tmp_path) == []


async def test_json_file_matching_advertised_size_is_kept(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    body = b'{"message": "a real JSON attachment"}'

    async def real(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    base = await server(real)
    fetched = await fetch(tmp_path, f"{base}/f", size=len(body))
    assert fetched.size == len(body)


async def test_gzip_bomb_is_stored_as_sent_never_inflated(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB

    async def gz(_: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    base = await server(gz)
    fetched = await fetch(tmp_path, f"{base}/f", max_bytes=1 << 20)
    assert fetched.size == len(bomb)
    assert fetched.sha256 == hashlib.sha256(bomb).hexdigest()


async def test_short_body_is_retryable_and_leaves_nothing(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(PAYLOAD)
        await response.prepare(request)
        await response.write(PAYLOAD[:1000])
        assert request.transport is not None
        request.transport.close()
        return response

    base = await server(short)
    with pytest.raises(FetchError) as info:
        await fetch(tmp_path, f"{base}/f", size=len(PAYLOAD))
    assert info.value.retryable
    assert leftovers(tmp_path) == []


async def test_size_mismatch_is_retryable(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD)

    base = await server(ok)
    with pytest.raises(FetchError, match="advertised") as info:
        await fetch(tmp_path, f"{base}/f", size=len(PAYLOAD) + 1)
    assert info.value.retryable


async def test_redirects_checked_hop_by_hop(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD)

    target = await server(ok)

    async def to_local(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"{target}/final")

    async def to_foreign(_: web.Request) -> web.Response:
        raise web.HTTPFound("https://evil.example/steal")

    local = await server(to_local)
    assert (await fetch(tmp_path, f"{local}/f")).size == len(PAYLOAD)
    foreign = await server(to_foreign)
    with pytest.raises(FetchError, match="allowed_hosts"):
        await fetch(tmp_path, f"{foreign}/f")


@pytest.mark.parametrize(
    ("status", "refresh", "retryable"),
    [
        (401, True, False),
        (403, True, False),
        (404, True, False),
        (503, False, True),
        (429, False, True),
        (400, False, False),
    ],
)
async def test_status_mapping(
    tmp_path: Path, server, status: int, refresh: bool, retryable: bool
) -> None:  # type: ignore[no-untyped-def]
    async def answer(_: web.Request) -> web.Response:
        return web.Response(status=status, text="no")

    base = await server(answer)
    with pytest.raises(FetchError) as info:
        await fetch(tmp_path, f"{base}/f")
    assert (info.value.refresh, info.value.retryable, info.value.status) == (
        refresh,
        retryable,
        status,
    )


async def test_loopback_name_refused_at_connect_time(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD)

    base = await server(ok)
    port = base.rsplit(":", 1)[1]
    strict = UrlPolicy(("http",), ("localhost",), allow_private_addresses=False)
    with pytest.raises(FetchError, match="localhost resolves only to private") as info:
        await fetch(tmp_path, f"http://localhost:{port}/f", policy=strict)
    # A refusal by policy is final: retrying it would only repeat the question.
    assert not info.value.retryable and not info.value.refresh


async def test_self_signed_certificate_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD)

    runner, port = await serve(ok, ssl_context=context)
    try:
        with pytest.raises(FetchError, match="TLS"):
            await fetch(tmp_path, f"https://127.0.0.1:{port}/f")
    finally:
        await runner.cleanup()
    assert leftovers(tmp_path) == []


async def test_every_concurrent_fetch_has_its_own_writer_thread(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    # Each response sends far more than a stalled download can buffer (sink queue, aiohttp's
    # buffer, both socket buffers), then waits until every response has sent that much. A
    # fetch whose sink had no thread would stop reading, its response could never send its
    # part, and all of them would wait for ever.
    concurrency = 8  # more than ThreadPoolExecutor's default pool on a 2-core machine
    part = 4 * HIGH_WATER
    block = bytes(range(256)) * 4096  # 1 MiB
    sent = 0
    everyone = asyncio.Event()

    async def handler(_: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        response.content_length = part + 1
        await response.prepare(_)
        for _n in range(part // len(block)):
            await response.write(block)
        sent += 1
        if sent == concurrency:
            everyone.set()
        await everyone.wait()
        await response.write(b"!")
        return response

    base = await server(handler)
    (tmp_path / "tmp").mkdir()
    async with download_session(LOCAL, concurrency) as http:
        fetcher = Fetcher(
            http, LOCAL, tmp_dir=tmp_path / "tmp", max_bytes=part + 1, concurrency=concurrency
        )
        try:
            fetched = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        fetcher.fetch(f"{base}/{n}", expected_size=part + 1, dig=None)
                        for n in range(concurrency)
                    )
                ),
                60,
            )
        finally:
            fetcher.close()
    assert [f.size for f in fetched] == [part + 1] * concurrency
    assert len({f.path for f in fetched}) == concurrency
