"""Helpers for the replicator tests: a `[replica]` section, and reading the bucket back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from archiver.replica.bucket import ChunkKey, parse_key
from archiver.store.layout import list_segments, manifest_dir
from tests.replica.seaweed import SeaweedS3


def replica_section(
    s3: SeaweedS3,
    bucket: str,
    directory: Path,
    *,
    prefix: str = "acme/",
    lock_mode: str = "COMPLIANCE",
    max_lag: float = 2,
    chunk_max_bytes: int = 65536,
    secret: str | None = None,
) -> str:
    """The `[replica]` table for tests.helpers.write_config's `extra` (secret file 0600)."""
    path = directory / "s3_secret"
    path.write_text((s3.secret_access_key if secret is None else secret) + "\n")
    path.chmod(0o600)
    return f"""
[replica]
enabled = true
endpoint_url = "{s3.endpoint_url}"
region = "{s3.region}"
bucket = "{bucket}"
prefix = "{prefix}"
access_key_id = "{s3.access_key_id}"
secret_access_key_file = "{path}"
lock_mode = "{lock_mode}"
retention_days = 1
max_lag = {max_lag}
chunk_max_bytes = {chunk_max_bytes}
"""


async def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    async for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return sorted(keys)


async def read_object(client: Any, bucket: str, key: str) -> bytes:
    answer = await client.get_object(Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        data: bytes = await body.read()
    return data


async def segments_from_bucket(client: Any, bucket: str, prefix: str) -> dict[int, bytes]:
    """Each segment rebuilt by concatenating its chunks in seq order."""
    chunks: list[tuple[ChunkKey, str]] = []
    for key in await list_keys(client, bucket, f"{prefix}manifest/"):
        parsed = parse_key(prefix, key)
        assert isinstance(parsed, ChunkKey), key
        chunks.append((parsed, key))
    chunks.sort(key=lambda c: (c[0].segment, c[0].first))
    out: dict[int, bytes] = {}
    for parsed, key in chunks:
        out[parsed.segment] = out.get(parsed.segment, b"") + await read_object(client, bucket, key)
    return out


def local_segments(root: Path) -> dict[int, bytes]:
    return {n: path.read_bytes() for n, path in list_segments(manifest_dir(root))}


def deny_deletes_policy(bucket: str) -> dict[str, Any]:
    """The bucket-policy form of deploy/README.md's deny statement: no DeleteObject (a plain
    DELETE would leave a delete marker over a locked version), no DeleteObjectVersion, no
    BypassGovernanceRetention, for anyone."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ArchiveIsWriteOnce",
                "Effect": "Deny",
                "Principal": "*",
                "Action": [
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                    "s3:BypassGovernanceRetention",
                ],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


async def deny_deletes(s3: SeaweedS3, bucket: str) -> None:
    async with s3.admin_client() as admin:
        await admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny_deletes_policy(bucket)))
