"""Blob uploads: one PUT up to 64 MiB, multipart above it, streamed from disk in bounded memory.

`upload_blob(s3, bucket, key, path, sha256_hex, mode=, until=)` never holds a blob, nor a part,
in memory: each body is a `FileSlice` that aiohttp iterates (aiofiles reads `STREAM_BYTES` at
a time), after a first streaming pass computed its Content-MD5 and SHA-256 (both sent, as
every PUT of ours). That pass runs in a worker thread (hashlib releases the GIL), so the loop
goes on sending the parts in flight meanwhile. So peak memory is a few `STREAM_BYTES` per
request in flight, whatever the blob's size. Above `MULTIPART_ABOVE`, `PART_CONCURRENCY` parts
of `PART_BYTES` go up at once, each with its own checksums; the object carries its whole-file
SHA-256 in `x-amz-meta-sha256`. A failed multipart upload is aborted; `abort_stale_uploads`
aborts what a killed process left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import aiofiles
import aiofiles.os
from botocore.exceptions import ClientError

from archiver.replica.bucket import (
    SHA256_META,
    PutOutcome,
    b64,
    existing_matches,
    lock_args,
    put_new_body,
    status_of,
)
from archiver.store.crash import crash_point

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

MULTIPART_ABOVE: Final = 64 * 1024 * 1024
PART_BYTES: Final = 8 * 1024 * 1024
# Parts in flight. 4 left the loopback server idle between parts (bench/replica.py: 0.75-1.03x
# rclone copy, which has 16 in flight); each costs only a few STREAM_BYTES of memory.
PART_CONCURRENCY: Final = 8
STREAM_BYTES: Final = 256 * 1024  # one read while sending
# One read while hashing (in a worker thread). Not more: 1 MiB reads took tests/replica/
# test_memory.py's peak growth from 5 to 11 MB (over its 10 MB bound) with 8 parts in flight.
HASH_BYTES: Final = 256 * 1024


@dataclass(frozen=True)
class Digests:
    size: int
    md5: bytes
    sha256: bytes


async def digest_slice(path: Path, offset: int, length: int, whole: Any | None = None) -> Digests:
    """MD5 and SHA-256 of `length` bytes of `path` from `offset`, streamed (and fed to
    `whole`, a running hashlib object, when given), in a worker thread: on the event loop the
    hashing (most of the CPU of an upload) stalled every part in flight."""
    return await asyncio.to_thread(_digest, path, offset, length, whole)


def _digest(path: Path, offset: int, length: int, whole: Any | None) -> Digests:
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with path.open("rb", buffering=0) as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            data = fh.read(min(HASH_BYTES, left))
            if not data:
                raise OSError(f"blob {path.name} is shorter than it was")
            md5.update(data)
            sha.update(data)
            if whole is not None:
                whole.update(data)
            left -= len(data)
    return Digests(length, md5.digest(), sha.digest())


class FileSlice:
    """A request body: `length` bytes of `path` from `offset`, never all in memory.

    aiohttp sends it by iterating (`__aiter__`: aiofiles reads). botocore reads it through
    `read`/`seek` only to sign the payload over plain http (the loopback tests; over https
    with Content-MD5 it signs UNSIGNED-PAYLOAD), one megabyte at a time.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self.path, self.offset, self.length = path, offset, length
        self._pos = 0
        self._sync: IO[bytes] | None = None

    def __len__(self) -> int:
        return self.length

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (0, self._pos, self.length)[whence]
        self._pos = min(max(0, base + pos), self.length)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = self.length - self._pos
        want = left if size is None or size < 0 else min(size, left)
        if want <= 0:
            return b""
        if self._sync is None:
            self._sync = self.path.open("rb")
        self._sync.seek(self.offset + self._pos)
        data = self._sync.read(want)
        self._pos += len(data)
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with aiofiles.open(self.path, "rb") as fh:
            await fh.seek(self.offset)
            left = self.length
            while left > 0:
                data = await fh.read(min(STREAM_BYTES, left))
                if not data:
                    raise OSError(f"blob {self.path.name} is shorter than it was")
                left -= len(data)
                yield data

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None


async def upload_blob(
    s3: S3Client,
    bucket: str,
    key: str,
    path: Path,
    sha256_hex: str,
    *,
    mode: str,
    until: datetime | None,
) -> PutOutcome:
    size = (await aiofiles.os.stat(path)).st_size
    if size > MULTIPART_ABOVE:
        if await existing_matches(s3, bucket, key, size, sha256_hex):
            return PutOutcome.ALREADY_THERE
        return await _multipart(
            s3, bucket, key, path, sha256_hex, mode=mode, until=until, size=size
        )
    digests = await digest_slice(path, 0, size)
    if digests.sha256.hex() != sha256_hex:
        raise OSError(f"blob {path.name} does not hash to its name")
    body = FileSlice(path, 0, size)
    try:
        return await put_new_body(
            s3,
            bucket,
            key,
            body,
            size=size,
            md5=digests.md5,
            sha256=digests.sha256,
            mode=mode,
            until=until,
        )
    finally:
        body.close()


async def _multipart(
    s3: S3Client,
    bucket: str,
    key: str,
    path: Path,
    sha256_hex: str,
    *,
    mode: str,
    until: datetime | None,
    size: int,
) -> PutOutcome:
    started = await s3.create_multipart_upload(
        Bucket=bucket,
        Key=key,
        ChecksumAlgorithm="SHA256",
        ContentType="application/octet-stream",
        Metadata={SHA256_META: sha256_hex},
        **lock_args(mode, until),
    )
    upload_id = started["UploadId"]
    parts: dict[int, CompletedPartTypeDef] = {}
    try:
        await _parts(
            s3, bucket, key, upload_id, path=path, size=size, sha256_hex=sha256_hex, parts=parts
        )
        try:
            await s3.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [parts[n] for n in sorted(parts)]},
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if status_of(exc) not in (409, 412):
                raise
            await abort_quietly(s3, bucket, key, upload_id)
            if await existing_matches(s3, bucket, key, size, sha256_hex):
                return PutOutcome.ALREADY_THERE
            raise
    except BaseException:
        await abort_quietly(s3, bucket, key, upload_id)
        raise
    return PutOutcome.CREATED


async def _parts(
    s3: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    *,
    path: Path,
    size: int,
    sha256_hex: str,
    parts: dict[int, CompletedPartTypeDef],
) -> None:
    """Every part, `PART_CONCURRENCY` at a time; the first failure is raised as itself."""
    slots = asyncio.Semaphore(PART_CONCURRENCY)
    whole = hashlib.sha256()

    async def one(number: int, offset: int, digests: Digests) -> None:
        body: Any = FileSlice(path, offset, digests.size)
        try:
            answer = await s3.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=b64(digests.md5),
                ChecksumSHA256=b64(digests.sha256),
            )
        finally:
            body.close()
            slots.release()
        parts[number] = {
            "ETag": answer["ETag"],
            "PartNumber": number,
            "ChecksumSHA256": b64(digests.sha256),
        }
        if number == 2:
            crash_point("replica_mid_multipart")

    try:
        async with asyncio.TaskGroup() as group:
            for number, offset in enumerate(range(0, size, PART_BYTES), start=1):
                await slots.acquire()
                length = min(PART_BYTES, size - offset)
                # In order, so the whole-file hash is fed in order too.
                digests = await digest_slice(path, offset, length, whole)
                group.create_task(one(number, offset, digests))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    if whole.hexdigest() != sha256_hex:
        raise OSError(f"blob {path.name} does not hash to its name")


async def abort_quietly(s3: S3Client, bucket: str, key: str, upload_id: str) -> None:
    # Best effort: what is left is aborted at the next start (abort_stale_uploads).
    with contextlib.suppress(Exception):
        await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


async def abort_stale_uploads(s3: S3Client, bucket: str, prefix: str) -> int:
    """Abort every unfinished multipart upload under `prefix` (one daemon per prefix, so none
    is another's live upload); returns how many."""
    aborted = 0
    paginator = s3.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            if "Key" in upload and "UploadId" in upload:
                await s3.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
    return aborted
