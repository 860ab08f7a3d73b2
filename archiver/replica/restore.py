"""`restore`: rebuild a complete ROOT from the bucket into an empty (or absent) folder.

Segments are the chunks of each segment concatenated in seq order, so they come back byte
for byte; with `upto` the chunk holding that seq is cut after its line (never inside one).
Blobs stream through a SHA-256 into tmp/ and are renamed into blobs/ only when they hash to
their name (memory holds one read, whatever the blob's size). Checkpoints up to the last
restored seq follow. No state file: the daemon rebuilds it from the manifest at its first
start. Then `verify` runs on the result; its verdict is the command's.

The bucket is read as it is now (its latest versions); `replica verify` says whether it is
whole. A gap in the chunks stops the restore: a segment after a gap would not be the
archive's.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from archiver.config import Config
from archiver.errors import ArchiverError, ConfigError
from archiver.replica.audit import Bar
from archiver.replica.bucket import (
    BlobKey,
    CheckpointKey,
    ChunkKey,
    blob_key,
    parse_key,
    status_of,
)
from archiver.store import checkpoint
from archiver.store.layout import (
    BLOBS_DIR,
    CHECKPOINTS_DIR,
    MANIFEST_DIR,
    TMP_DIR,
    blob_path,
    fsync_dir,
    segment_path,
)
from archiver.store.manifest import is_hex_digest, parse_line

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

READ_BYTES: Final = 1024 * 1024
_SEGMENT_MODE: Final = 0o640  # as the writer's segments (store/segments.py)
_BLOB_MODE: Final = 0o444  # as downloads/blobs.py


class RestoreError(ArchiverError):
    """The bucket cannot give back a whole archive; the message says what is missing."""


@dataclass
class Restored:
    segments: int = 0
    lines: int = 0
    last_seq: int = 0
    blobs: int = 0
    checkpoints: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def check_target(target: Path) -> None:
    """An absent or empty folder; anything else is refused before the bucket is read."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ConfigError(f"--to {target}: not a folder; give an empty or absent folder")
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(
            f"--to {target} is not empty: restore writes only into an empty or absent folder "
            "(it never mixes with an archive; move the contents away or give another folder)"
        )


async def restore(
    s3: S3Client, config: Config, target: Path, *, upto: int | None = None
) -> Restored:
    check_target(target)
    bucket, prefix = config.replica.bucket, config.replica.prefix
    chunks: list[tuple[ChunkKey, str, int]] = []
    notes: list[tuple[int, str]] = []
    sizes: dict[str, int] = {}
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key, size = obj.get("Key", ""), obj.get("Size", 0)
            parsed = parse_key(prefix, key)
            if isinstance(parsed, ChunkKey) and (upto is None or parsed.first <= upto):
                chunks.append((parsed, key, size))
            elif isinstance(parsed, CheckpointKey):
                notes.append((parsed.seq, key))
            elif isinstance(parsed, BlobKey):
                sizes[parsed.sha256] = size
    chunks.sort(key=lambda c: (c[0].segment, c[0].first))
    _contiguous([c[0] for c in chunks], bucket, prefix)
    if not chunks:
        raise RestoreError(f"bucket {bucket!r} holds no manifest chunk under {prefix!r}")
    for sub in ("", MANIFEST_DIR, BLOBS_DIR, TMP_DIR, CHECKPOINTS_DIR):
        (target / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    done = Restored()
    total = sum(size for _, _, size in chunks)
    with Bar("manifest", total, "bytes") as bar:
        wanted = await _segments(s3, bucket, target, chunks, upto=upto, done=done, bar=bar)
    with Bar("blobs", sum(sizes.get(sha, 0) for sha in wanted), "bytes") as bar:
        for sha in wanted:
            await _blob(s3, bucket, prefix, target, sha, done=done, bar=bar)
    for seq, key in sorted(notes):
        if seq <= done.last_seq:
            checkpoint.write_note(target, seq, await _read(s3, bucket, key))
            done.checkpoints += 1
    for sub in (MANIFEST_DIR, CHECKPOINTS_DIR, "blobs", ""):
        fsync_dir(target / sub)
    return done


def _contiguous(chunks: list[ChunkKey], bucket: str, prefix: str) -> None:
    seq = 0
    for chunk in chunks:
        if chunk.first != seq + 1:
            advice = f"restore --upto {seq}" if seq else "nothing before it can be restored"
            raise RestoreError(
                f"bucket {bucket!r}: seq {seq + 1}..{chunk.first - 1} are in no chunk under "
                f"{prefix}manifest/ (before segment {chunk.segment}): the bucket cannot give "
                f"a whole archive past seq {seq}; run `replica verify` to see what is "
                f"damaged, or {advice}"
            )
        seq = chunk.last


async def _segments(
    s3: S3Client,
    bucket: str,
    target: Path,
    chunks: list[tuple[ChunkKey, str, int]],
    *,
    upto: int | None,
    done: Restored,
    bar: Bar,
) -> dict[str, None]:
    """Write each segment; return the blobs its attachment lines name, in order."""
    wanted: dict[str, None] = {}
    current: int | None = None
    fd = -1
    try:
        for parsed, key, size in chunks:
            if parsed.segment != current:
                if fd >= 0:
                    os.fsync(fd)
                    os.close(fd)
                current = parsed.segment
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                fd = os.open(segment_path(target, current), flags, _SEGMENT_MODE)
                done.segments += 1
            data = await _read(s3, bucket, key)
            if upto is not None and parsed.last > upto:
                data = _cut(data, upto, key)
            for raw in data.splitlines():
                obj = parse_line(raw)
                done.lines += 1
                done.last_seq = int(obj["seq"])
                if obj.get("kind") == "attachment" and is_hex_digest(obj.get("sha256")):
                    wanted[obj["sha256"]] = None
            _write_all(fd, data)
            done.bytes += len(data)
            bar.advance(size)
    finally:
        if fd >= 0:
            os.fsync(fd)
            os.close(fd)
    return wanted


def _cut(data: bytes, upto: int, key: str) -> bytes:
    """The chunk's lines up to and with seq `upto`."""
    end = 0
    for raw in data.splitlines(keepends=True):
        end += len(raw)
        if parse_line(raw.rstrip(b"\n")).get("seq") == upto:
            return data[:end]
    raise RestoreError(f"{key}: no line with seq {upto} (its key names it)")


async def _blob(
    s3: S3Client, bucket: str, prefix: str, target: Path, sha: str, *, done: Restored, bar: Bar
) -> None:
    final = blob_path(target, sha)
    if final.exists():
        return
    key = blob_key(prefix, sha)
    tmp = target / TMP_DIR / f"{sha}.restore"
    digest = hashlib.sha256()
    try:
        answer = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if status_of(exc) == 404:
            done.problems.append(f"{key}: not in the bucket (verify will name its line)")
            return
        raise
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        async with answer["Body"] as body:
            while block := await body.read(READ_BYTES):
                digest.update(block)
                _write_all(fd, block)
                bar.advance(len(block))
        os.fsync(fd)
    finally:
        os.close(fd)
    if digest.hexdigest() != sha:
        tmp.unlink()
        done.problems.append(f"{key}: its bytes hash to {digest.hexdigest()}, not its name")
        return
    final.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(tmp, _BLOB_MODE)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    done.blobs += 1


async def _read(s3: S3Client, bucket: str, key: str) -> bytes:
    answer: Any = await s3.get_object(Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        data: bytes = await body.read()
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
