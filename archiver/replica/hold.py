"""`replica legal-hold --on|--off`: legal hold on every object version under the prefix.

A legal hold keeps a version from deletion whatever its retention, until it is cleared
(litigation). Each version's hold is read first and set only when it differs, so a second
run is a no-op and a run after an interruption finishes the rest: there is nothing to
resume from but the bucket itself. A few requests are in flight at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from botocore.exceptions import ClientError

from archiver.config import Config
from archiver.replica.audit import Bar
from archiver.replica.bucket import describe, parse_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

IN_FLIGHT: Final = 8
_NO_HOLD: Final = ("NoSuchObjectLegalHold", "ObjectLockConfigurationNotFoundError")


@dataclass
class HoldOutcome:
    status: str  # "ON" or "OFF"
    versions: int = 0
    changed: int = 0
    already: int = 0


async def set_legal_hold(s3: S3Client, config: Config, *, on: bool) -> HoldOutcome:
    outcome = HoldOutcome("ON" if on else "OFF")
    # Two listings (one to count for the bar, one to work page by page): a listing call
    # covers a thousand versions, and memory holds one page, whatever the bucket's size.
    total = 0
    async for page in _pages(s3, config):
        total += len(page)
    with Bar(f"legal hold {outcome.status}", total, "objects") as bar:
        async for page in _pages(s3, config):
            async with asyncio.TaskGroup() as group:
                gate = asyncio.Semaphore(IN_FLIGHT)
                for key, version_id in page:
                    group.create_task(_one(s3, config, key, version_id, gate, outcome, bar))
    return outcome


async def _pages(s3: S3Client, config: Config) -> AsyncIterator[list[tuple[str, str]]]:
    bucket, prefix = config.replica.bucket, config.replica.prefix
    paginator = s3.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        found = []
        for version in page.get("Versions", []):
            key, version_id = version.get("Key", ""), version.get("VersionId")
            if version_id and parse_key(prefix, key) is not None:
                found.append((key, version_id))
        yield found


async def _one(  # noqa: PLR0917 - one task's whole context
    s3: S3Client,
    config: Config,
    key: str,
    version_id: str,
    gate: asyncio.Semaphore,
    outcome: HoldOutcome,
    bar: Bar,
) -> None:
    bucket = config.replica.bucket
    async with gate:
        if await _hold(s3, bucket, key, version_id) == outcome.status:
            outcome.already += 1
        else:
            status: Literal["ON", "OFF"] = "ON" if outcome.status == "ON" else "OFF"
            await s3.put_object_legal_hold(
                Bucket=bucket, Key=key, VersionId=version_id, LegalHold={"Status": status}
            )
            outcome.changed += 1
        outcome.versions += 1
        bar.advance()


async def _hold(s3: S3Client, bucket: str, key: str, version_id: str) -> str:
    try:
        answer = await s3.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version_id)
    except ClientError as exc:
        if describe(exc) in _NO_HOLD:
            return "OFF"  # never set: the same as cleared
        raise
    return str(answer.get("LegalHold", {}).get("Status", "OFF"))
