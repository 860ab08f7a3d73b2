"""The S3 server the replica tests stand on does what they rely on (else they prove nothing)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tests.replica.seaweed import SeaweedS3


def _sums(body: bytes) -> dict[str, str]:
    return {
        "ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
        "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
    }


async def test_locked_bucket_enforces_the_lock(s3: SeaweedS3, locked_bucket: str) -> None:
    until = datetime.now(UTC) + timedelta(days=2)
    async with s3.client() as c:
        conf = await c.get_object_lock_configuration(Bucket=locked_bucket)
        assert conf["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
        assert (await c.get_bucket_versioning(Bucket=locked_bucket))["Status"] == "Enabled"
        body = b"line\n"
        put = await c.put_object(
            Bucket=locked_bucket,
            Key="k",
            Body=body,
            IfNoneMatch="*",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
            **_sums(body),
        )
        with pytest.raises(ClientError) as again:
            await c.put_object(Bucket=locked_bucket, Key="k", Body=b"x", IfNoneMatch="*")
        assert again.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        with pytest.raises(ClientError) as bad:
            await c.put_object(
                Bucket=locked_bucket, Key="k2", Body=body, ContentMD5=_sums(b"x")["ContentMD5"]
            )
        assert bad.value.response["Error"]["Code"] == "BadDigest"
        with pytest.raises(ClientError):
            await c.delete_object(Bucket=locked_bucket, Key="k", VersionId=put["VersionId"])
        with pytest.raises(ClientError):
            await c.put_object_retention(
                Bucket=locked_bucket,
                Key="k",
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(days=1)},
            )
        retention = await c.get_object_retention(Bucket=locked_bucket, Key="k")
        assert retention["Retention"]["Mode"] == "COMPLIANCE"


async def test_plain_bucket_has_no_lock(s3: SeaweedS3, plain_bucket: str) -> None:
    async with s3.client() as c:
        with pytest.raises(ClientError) as none:
            await c.get_object_lock_configuration(Bucket=plain_bucket)
    assert "ObjectLockConfiguration" in none.value.response["Error"]["Code"]


async def test_a_wrong_secret_is_refused(s3: SeaweedS3, locked_bucket: str) -> None:
    async with s3.client(secret="0" * 40) as c:
        with pytest.raises(ClientError) as refused:
            await c.head_bucket(Bucket=locked_bucket)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_restart_keeps_ports_and_data(own_s3: SeaweedS3) -> None:
    own_s3.create_bucket("kept", lock=True)
    url = own_s3.endpoint_url
    own_s3.stop()
    own_s3.start()
    assert own_s3.endpoint_url == url

    async def buckets() -> list[str]:
        async with own_s3.client() as c:
            return [b["Name"] for b in (await c.list_buckets())["Buckets"]]

    import asyncio

    assert "kept" in asyncio.run(buckets())
