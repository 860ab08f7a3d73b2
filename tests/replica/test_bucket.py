"""archiver.replica.bucket: the key layout (pure), and PUT / check against a real S3 server."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from archiver.config import ReplicaConfig, Secret
from archiver.replica import bucket as b
from tests.replica.seaweed import SeaweedS3

H = "ab" + "0" * 62


@pytest.mark.parametrize(
    ("prefix", "key", "parsed"),
    [
        ("", "manifest/000001/000000000001-000000000042.jsonl", b.ChunkKey(1, 1, 42)),
        ("acme/", "acme/manifest/000012/000000000100-000000000100.jsonl", b.ChunkKey(12, 100, 100)),
        ("acme/", f"acme/blobs/sha256/ab/{H}", b.BlobKey(H)),
        ("acme/", "acme/checkpoints/000000000007.note", b.CheckpointKey(7)),
        ("acme/", "other/checkpoints/000000000007.note", None),
        ("", "manifest/000001/000000000042-000000000001.jsonl", None),  # first > last
        ("", "manifest/000000/000000000001-000000000001.jsonl", None),  # segment 0
        ("", "manifest/1/1-2.jsonl", None),
        ("", f"blobs/sha256/cd/{H}", None),  # fan-out folder is not the hash's first two
        ("", f"blobs/sha256/ab/{H.upper()}", None),
        ("", "checkpoints/000000000000.note", None),
        ("", "manifest/000001/000000000001-000000000002.jsonl.tmp", None),
    ],
)
def test_parse_key(prefix: str, key: str, parsed: object) -> None:
    assert b.parse_key(prefix, key) == parsed


def test_keys_round_trip() -> None:
    assert b.chunk_key("p/", 3, 5, 9) == "p/manifest/000003/000000000005-000000000009.jsonl"
    assert b.parse_key("p/", b.chunk_key("p/", 3, 5, 9)) == b.ChunkKey(3, 5, 9)
    assert b.blob_key("", H) == f"blobs/sha256/ab/{H}"
    assert b.checkpoint_key("", 42) == "checkpoints/000000000042.note"
    for bad in ((0, 1, 1), (1, 0, 1), (1, 5, 4)):
        with pytest.raises(ValueError, match="bad chunk"):
            b.chunk_key("", *bad)
    with pytest.raises(ValueError, match="SHA-256"):
        b.blob_key("", "../../etc/passwd")


def test_retain_until_adds_a_day_of_margin() -> None:
    at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert b.retain_until(at, 2555) == at + timedelta(days=2556)
    with pytest.raises(ValueError, match="naive"):
        b.retain_until(datetime(2024, 5, 1), 1)
    assert b.lock_args("none", None) == {}
    assert b.lock_args("GOVERNANCE", at) == {
        "ObjectLockMode": "GOVERNANCE",
        "ObjectLockRetainUntilDate": at,
    }


@pytest.mark.parametrize(
    ("skew", "warnings", "error"),
    [(0, 0, False), (59, 0, False), (-61, 1, False), (899, 1, False), (901, 0, True)],
)
def test_clock_skew(skew: int, warnings: int, error: bool) -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    if error:
        with pytest.raises(b.ReplicaBucketError, match="more than 15 min"):
            b.clock_skew_findings(now + timedelta(seconds=skew), now)
    else:
        assert len(b.clock_skew_findings(now + timedelta(seconds=skew), now)) == warnings


def replica(s3: SeaweedS3, bucket: str, **kw: object) -> ReplicaConfig:
    return ReplicaConfig(
        enabled=True,
        endpoint_url=s3.endpoint_url,
        bucket=bucket,
        access_key_id=s3.access_key_id,
        **kw,  # type: ignore[arg-type]
    )


async def test_put_new_creates_resumes_and_refuses_other_bytes(
    s3: SeaweedS3, locked_bucket: str
) -> None:
    until = datetime.now(UTC) + timedelta(days=1)
    config = replica(s3, locked_bucket)
    async with b.open_client(config, Secret(s3.secret_access_key)) as c:
        args = {"mode": "COMPLIANCE", "until": until}
        assert await b.put_new(c, locked_bucket, "k", b"one\n", **args) is b.PutOutcome.CREATED
        again = await b.put_new(c, locked_bucket, "k", b"one\n", **args)
        assert again is b.PutOutcome.ALREADY_THERE
        with pytest.raises(b.ReplicaConflict) as conflict:
            await b.put_new(c, locked_bucket, "k", b"two\n", **args)
        assert conflict.value.key == "k" and "k" in str(conflict.value)
        with pytest.raises(b.ReplicaConflict):
            await b.put_new(c, locked_bucket, "k", b"ONE\n", **args)  # same size, other bytes
        retention = await c.get_object_retention(Bucket=locked_bucket, Key="k")
        assert retention["Retention"]["Mode"] == "COMPLIANCE"
        assert retention["Retention"]["RetainUntilDate"] >= until - timedelta(seconds=1)
        body = await (await c.get_object(Bucket=locked_bucket, Key="k"))["Body"].read()
        assert body == b"one\n"
        assert await b.existing_matches(
            c, locked_bucket, "k", 4, hashlib.sha256(b"one\n").hexdigest()
        )
        assert not await b.existing_matches(c, locked_bucket, "absent", 1, H)


async def test_check_bucket(s3: SeaweedS3, locked_bucket: str, plain_bucket: str) -> None:
    secret = Secret(s3.secret_access_key)
    async with b.open_client(replica(s3, locked_bucket), secret) as c:
        assert await b.check_bucket(c, replica(s3, locked_bucket)) == []
        with pytest.raises(b.ReplicaBucketError) as no_lock:
            await b.check_bucket(c, replica(s3, plain_bucket))
        assert "no Object Lock" in str(no_lock.value) and "lock_mode" in str(no_lock.value)
        # A plain DR copy needs no lock.
        assert await b.check_bucket(c, replica(s3, plain_bucket, lock_mode="none")) == []
        with pytest.raises(b.ReplicaBucketError, match="does not exist"):
            await b.check_bucket(c, replica(s3, "no-such-bucket"))
    async with b.open_client(replica(s3, locked_bucket), Secret("0" * 40)) as c:
        with pytest.raises(b.ReplicaBucketError) as refused:
            await b.check_bucket(c, replica(s3, locked_bucket))
    assert "refused the credentials" in str(refused.value)
    assert s3.secret_access_key not in str(refused.value)


async def test_default_retention_is_a_warning(s3: SeaweedS3, locked_bucket: str) -> None:
    async with s3.admin_client() as admin:
        try:
            await admin.put_object_lock_configuration(
                Bucket=locked_bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
                },
            )
        except ClientError as exc:  # pragma: no cover - depends on the server
            pytest.skip(f"server refused a default retention: {exc}")
    async with b.open_client(replica(s3, locked_bucket), Secret(s3.secret_access_key)) as c:
        warnings = await b.check_bucket(c, replica(s3, locked_bucket))
    assert len(warnings) == 1 and "default retention" in warnings[0]
