"""Helpers for the replicator tests: a `[replica]` section, and reading the bucket back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.replica.bucket import ChunkKey, parse_key
from archiver.store.layout import list_segments, manifest_dir
from tests.helpers import write_config
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


# --- one replicated GOVERNANCE bucket, damaged in copies (test_audit, test_restore_versions) --

PREFIX = "acme/"
NO_SIM = {
    "api_url": "http://127.0.0.1:9/v2",
    "oauth_url": "http://127.0.0.1:9/oauth/token",
    "account_id": "acc",
    "client_id": "cid",
    "client_secret": "zoom-secret",
}


@dataclass(frozen=True)
class Replicated:
    root: Path
    bucket: str
    pub: Path
    base: Path


async def clone(s3: SeaweedS3, source: str, name: str) -> str:
    """A copy of `source`'s objects (bytes, metadata, lock and retain-until) in a new bucket."""
    await s3.acreate_bucket(name, lock=True)
    async with s3.admin_client() as admin:
        for key in await list_keys(admin, source):
            answer = await admin.get_object(Bucket=source, Key=key)
            async with answer["Body"] as body:
                data = await body.read()
            await admin.put_object(
                Bucket=name,
                Key=key,
                Body=data,
                Metadata=answer.get("Metadata", {}),
                ObjectLockMode=answer["ObjectLockMode"],
                ObjectLockRetainUntilDate=answer["ObjectLockRetainUntilDate"],
            )
    return name


def config_for(s3: SeaweedS3, bucket: str, directory: Path, root: Path, **kw: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    extra = replica_section(s3, bucket, directory, lock_mode="GOVERNANCE", **kw)
    return write_config(directory, NO_SIM, root=root, extra=extra)


async def chunk_keys(client: Any, bucket: str) -> list[str]:
    """The chunk keys in (segment, first seq) order."""
    parsed = [(parse_key(PREFIX, k), k) for k in await list_keys(client, bucket)]
    chunks = [(p, k) for p, k in parsed if isinstance(p, ChunkKey)]
    return [k for p, k in sorted(chunks, key=lambda c: (c[0].segment, c[0].first))]


async def version_of(admin: Any, bucket: str, key: str) -> str:
    versions = await admin.list_object_versions(Bucket=bucket, Prefix=key)
    return str(versions["Versions"][0]["VersionId"])


async def replace(admin: Any, bucket: str, key: str, data: bytes) -> None:
    """The admin's rewrite with bypass: the old version gone, a new one locked as ours were."""
    old = await admin.get_object(Bucket=bucket, Key=key)
    until = old["ObjectLockRetainUntilDate"]
    await admin.delete_object(
        Bucket=bucket,
        Key=key,
        VersionId=await version_of(admin, bucket, key),
        BypassGovernanceRetention=True,
    )
    await admin.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=until,
    )
