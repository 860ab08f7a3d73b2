"""SIGKILL inside the replicator (a chunk's PUT, a multipart blob upload), then a restart.

The daemon runs `run --once` as a subprocess armed at a crash point (archiver.store.crash);
it dies there, then a clean `run --once` completes the pass. The bucket must then hold what
an uninterrupted run leaves: no partial object (no unfinished multipart upload, every object
whole), no duplicate chunk (the chunks chain 1..head with no gap or overlap, one version per
key), the rebuilt segments byte for byte the local ones, and one blob per attachment.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from pathlib import Path

import pytest

from archiver.replica.bucket import BlobKey, ChunkKey, parse_key
from archiver.simulator import Simulator
from tests.helpers import manifest_lines
from tests.reliability.harness import archiver_config, child_env, launch, small_account
from tests.replica.rig import (
    list_keys,
    local_segments,
    read_object,
    replica_section,
    segments_from_bucket,
)
from tests.replica.seaweed import SeaweedS3

PREFIX = "acme/"
RUN_TIMEOUT = 240.0


async def _run(config: Path, log: Path, crash_at: str | None = None) -> int:
    proc = await launch(config, log, "--once", env=child_env(crash_at))
    return await asyncio.wait_for(proc.wait(), RUN_TIMEOUT)


async def _audit(s3: SeaweedS3, bucket: str, root: Path) -> None:
    lines = list(manifest_lines(root))
    attached = {line["sha256"] for line in lines if line["kind"] == "attachment"}
    async with s3.client() as c:
        uploads = await c.list_multipart_uploads(Bucket=bucket, Prefix=PREFIX)
        assert not uploads.get("Uploads"), "a multipart upload was left unfinished"
        keys = await list_keys(c, bucket, PREFIX)
        parsed = {k: parse_key(PREFIX, k) for k in keys}
        chunks = [p for p in parsed.values() if isinstance(p, ChunkKey)]
        chunks.sort(key=lambda p: p.first)
        assert chunks[0].first == 1 and chunks[-1].last == lines[-1]["seq"]
        for earlier, later in itertools.pairwise(chunks):
            assert later.first == earlier.last + 1, (earlier, later)
        versions = await c.list_object_versions(Bucket=bucket, Prefix=PREFIX)
        assert len(versions.get("Versions", [])) == len(keys)
        assert not versions.get("DeleteMarkers")
        assert await segments_from_bucket(c, bucket, PREFIX) == local_segments(root)
        blobs = {p.sha256: k for k, p in parsed.items() if isinstance(p, BlobKey)}
        assert set(blobs) == attached
        for sha, key in blobs.items():
            assert hashlib.sha256(await read_object(c, bucket, key)).hexdigest() == sha
        assert set(parsed.values()) - set(chunks) - {BlobKey(s) for s in blobs} == set()


@pytest.mark.parametrize(
    ("crash_at", "large"),
    [
        ("replica_before_chunk_put", False),
        ("replica_after_chunk_put", False),
        ("replica_mid_multipart", True),
    ],
)
async def test_sigkill_in_the_replicator_then_restart_leaves_the_uninterrupted_listing(
    tmp_path: Path, s3: SeaweedS3, crash_at: str, large: bool
) -> None:
    name = crash_at.split("@", maxsplit=1)[0].replace("_", "-")
    bucket = await s3.acreate_bucket(f"crash-{name}")
    account = small_account(
        3,
        sessions=4,
        large_attachments=1 if large else 0,
        large_attachment_bytes=70 << 20,
        slow_seconds=0.0,
        stall_seconds=0.0,
    )
    root = tmp_path / "archive"
    log = tmp_path / "daemon.log"
    async with Simulator(account) as sim:
        extra = replica_section(s3, bucket, tmp_path, max_lag=2, chunk_max_bytes=65536)
        config = archiver_config(tmp_path, sim, extra=extra)
        assert await _run(config, log, crash_at) == -9, log.read_text()[-3000:]
        assert await _run(config, log) == 0, log.read_text()[-3000:]
    if large:
        sizes = [line["size"] for line in manifest_lines(root) if line["kind"] == "attachment"]
        assert max(sizes) == 70 << 20  # the blob that went multipart is in the archive
    await _audit(s3, bucket, root)
