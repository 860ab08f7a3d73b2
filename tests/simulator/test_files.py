"""Attachment bytes and the file host: hashes, JWTs, content types, streaming."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import aiohttp
import jwt
import psutil
import pytest

from archiver.simulator import Simulator
from archiver.simulator.auth import Expiry, FileTokens
from archiver.simulator.content import BLOCK_SIZE, MAGIC, Content
from archiver.simulator.model import Attachment

from .conftest import Zoom, running

TYPES = {
    "PNG": "image/png",
    "GIF": "image/gif",
    "JPG": "image/jpeg",
    "AUDIO": "audio/mpeg",
    "VIDEO": "video/mp4",
    "OTHER": "application/octet-stream",
}


@pytest.mark.parametrize("kind", sorted(MAGIC))
def test_streamed_bytes_match_the_precomputed_digest(kind: str) -> None:
    content = Content(seed=3)
    tail = len(Content.tail(Attachment("x" * 22, "", kind, 0)))
    edge = len(MAGIC[kind]) + tail
    sizes = [0, 1, edge - 1, edge, edge + 1, BLOCK_SIZE - 1, BLOCK_SIZE + edge, 3 * BLOCK_SIZE + 7]
    attachments = [Attachment(f"{kind:<5}{size:017d}", "", kind, size) for size in sizes]
    content.fill_digests(attachments)
    for att in attachments:
        chunks = list(content.chunks(att, chunk_size=100_000))
        assert all(len(chunk) <= 100_000 for chunk in chunks)
        data = b"".join(chunks)
        assert len(data) == att.size
        assert hashlib.sha256(data).hexdigest() == att.sha256 == content.digest(att)
        if att.size >= edge:
            assert data.startswith(MAGIC[kind]) and data.endswith(Content.tail(att))
    assert len({att.sha256 for att in attachments}) == len(attachments)


def test_content_depends_on_the_seed() -> None:
    att = Attachment("a" * 22, "", "OTHER", 5000)
    assert Content(1).digest(att) != Content(2).digest(att)


def test_jwts_are_reused_while_they_keep_most_of_their_lifetime() -> None:
    expiry = Expiry.at(1000.0, now=10_000.0)
    assert (expiry.new, expiry.oldest) == (11_000, 10_900.0)
    assert expiry.accepts(10_900, 11_000)
    assert not expiry.accepts(10_899, 11_000)  # too little life left
    assert not expiry.accepts(10_950, 11_001)  # the lifetime has been shortened since
    tokens = FileTokens("k" * 32)
    att = Attachment("a" * 22, "x.png", "PNG", 10, "0" * 64)
    first = tokens.token(att, Expiry.at(1000.0, now=10_000.0))
    assert tokens.token(att, Expiry.at(1000.0, now=10_099.0)) == first
    assert tokens.token(att, Expiry.at(1000.0, now=10_101.0))[0] == 11_101
    assert tokens.token(att, Expiry.at(60.0, now=10_101.0))[0] == 10_161


def attachment_lines(sim: Simulator) -> dict[str, dict[str, Any]]:
    return {
        line["attachment_id"]: line for line in sim.ground_truth() if line["kind"] == "attachment"
    }


def url_of(sim: Simulator, attachment_id: str) -> str:
    for line in sim.ground_truth():
        for att in line.get("record", {}).get("attachments", []):
            if att["id"] == attachment_id:
                return str(att["download_url"])
    raise KeyError(attachment_id)


async def fresh_urls(zoom: Zoom, sim: Simulator) -> dict[str, dict[str, Any]]:
    """attachment id -> the attachment object as the API gives it now."""
    found: dict[str, dict[str, Any]] = {}
    for line in sim.ground_truth():
        if line["kind"] == "message" and "attachments" in line["record"]:
            path = f"/phone/sms/sessions/{line['session_id']}/messages/{line['message_id']}"
            for att in (await zoom.get(path)).json()["attachments"]:
                found[att["id"]] = att
    return found


async def test_every_attachment_downloads_with_its_truth_hash(zoom: Zoom, sim: Simulator) -> None:
    truth = attachment_lines(sim)
    urls = await fresh_urls(zoom, sim)
    assert set(urls) == set(truth)
    for attachment_id, att in urls.items():
        claims = jwt.decode(
            att["download_url"].split("jwt=")[1],
            options={"verify_signature": False},
        )
        assert claims["iss"] == "crossfile" and claims["aud"] == "file"
        assert claims["dig"] == truth[attachment_id]["sha256"]
        assert 172_700 < claims["exp"] - time.time() <= 172_800
        async with zoom.http.get(att["download_url"]) as response:
            data = await response.read()
            assert response.status == 200
            assert response.headers["Content-Type"] == TYPES[att["type"]]
            assert int(response.headers["Content-Length"]) == att["size"] == len(data)
        assert hashlib.sha256(data).hexdigest() == truth[attachment_id]["sha256"]
    stats = sim.stats()["downloads"]
    assert stats["count"] == len(urls)
    assert stats["bytes"] == sum(line["size"] for line in truth.values())


async def test_expired_jwt_is_401_or_200_with_the_quirk(zoom: Zoom, sim: Simulator) -> None:
    sim.set_switches(jwt_lifetime=-10)
    att = next(iter((await fresh_urls(zoom, sim)).values()))
    async with zoom.http.get(att["download_url"]) as response:
        assert response.status == 401
        assert response.content_type == "application/json"
        assert await response.json() == {"code": 401, "message": "The download link has expired."}
    sim.set_switches(quirk_expired_jwt_200=True)
    async with zoom.http.get(att["download_url"]) as response:
        assert response.status == 200
        assert (await response.json())["message"] == "The download link has expired."


async def test_forged_jwts_are_refused(zoom: Zoom, sim: Simulator) -> None:
    urls = await fresh_urls(zoom, sim)
    (first_id, first), (_, second) = list(urls.items())[:2]
    base = first["download_url"].split("?")[0]
    token = first["download_url"].split("jwt=")[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, "an-attacker-key-that-is-long-enough!!", algorithm="HS256")
    header, payload, signature = token.split(".")
    candidates = [
        f"{base}?jwt={forged}",
        f"{base}?jwt={second['download_url'].split('jwt=')[1]}",  # another file's JWT
        f"{base}?jwt={header}.{payload[:-2]}xx.{signature}",
        f"{base}?jwt=",
        base,
    ]
    for url in candidates:
        async with zoom.http.get(url) as response:
            assert response.status == 401, url
            assert (await response.json())["code"] == 401
    async with zoom.http.get(f"{sim.file_url}/file/download/unknown?jwt={token}") as response:
        assert response.status == 404
    session_id = next(
        line["session_id"] for line in sim.ground_truth() if line.get("attachment_id") == first_id
    )
    sim.delete_session(session_id)
    async with zoom.http.get(first["download_url"]) as response:
        assert response.status == 404


async def test_large_attachment_streams_in_flat_memory(http: aiohttp.ClientSession) -> None:
    size = 192 * 1024 * 1024
    async with running(large_attachments=1, large_attachment_bytes=size) as sim:
        zoom = Zoom(sim, http)
        truth = attachment_lines(sim)
        big = next(line for line in truth.values() if line["size"] == size)
        att = (await fresh_urls(zoom, sim))[big["attachment_id"]]
        process = psutil.Process()
        before = process.memory_info().rss
        digest = hashlib.sha256()
        async with http.get(att["download_url"]) as response:
            assert int(response.headers["Content-Length"]) == size
            async for chunk in response.content.iter_chunked(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == big["sha256"]
        assert process.memory_info().rss - before < 64 * 1024 * 1024
