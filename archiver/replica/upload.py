"""Blob uploads: one PUT up to 64 MiB, multipart above it, streamed from disk in bounded memory.

`upload_blob(s3, bucket, key, path, sha256_hex, mode=, until=)` reads the file with aiofiles
(on the event loop: archiving is never blocked behind a thread pool full of reads), one part
at a time: memory holds one part (`PART_BYTES`), whatever the blob's size. Each part carries
its Content-MD5 and SHA-256; the object its whole-file SHA-256 in `x-amz-meta-sha256`. A failed
multipart upload is aborted; `abort_stale_uploads` aborts what a killed process left.
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiofiles
import aiofiles.os
from botocore.exceptions import ClientError

from archiver.replica.bucket import (
    SHA256_META,
    PutOutcome,
    b64,
    existing_matches,
    lock_args,
    put_new,
    status_of,
)
from archiver.store.crash import crash_point

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

MULTIPART_ABOVE: Final = 64 * 1024 * 1024
PART_BYTES: Final = 8 * 1024 * 1024


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
    if size <= MULTIPART_ABOVE:
        async with aiofiles.open(path, "rb") as fh:
            body = await fh.read()
        if hashlib.sha256(body).hexdigest() != sha256_hex:
            raise OSError(f"blob {path.name} does not hash to its name")
        return await put_new(s3, bucket, key, body, mode=mode, until=until)
    if await existing_matches(s3, bucket, key, size, sha256_hex):
        return PutOutcome.ALREADY_THERE
    return await _multipart(s3, bucket, key, path, sha256_hex, mode=mode, until=until, size=size)


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
    whole = hashlib.sha256()
    parts: list[CompletedPartTypeDef] = []
    try:
        async with aiofiles.open(path, "rb") as fh:
            number = 0
            while chunk := await fh.read(PART_BYTES):
                number += 1
                whole.update(chunk)
                part_sha = b64(hashlib.sha256(chunk).digest())
                answer = await s3.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                    ContentMD5=b64(hashlib.md5(chunk, usedforsecurity=False).digest()),
                    ChecksumSHA256=part_sha,
                )
                del chunk
                parts.append(
                    {"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": part_sha}
                )
                if number == 2:
                    crash_point("replica_mid_multipart")
        if whole.hexdigest() != sha256_hex:
            raise OSError(f"blob {path.name} does not hash to its name")
        try:
            await s3.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
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
