"""`replica legal-hold --on|--off` through the CLI against SeaweedFS (GOVERNANCE, so the admin
could delete with bypass were it not for the hold)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from archiver.replica.bucket import blob_key, checkpoint_key, chunk_key
from tests.helpers import write_config
from tests.replica.rig import replica_section
from tests.replica.seaweed import SeaweedS3

PREFIX = "acme/"
NO_SIM = {
    "api_url": "http://127.0.0.1:9/v2",
    "oauth_url": "http://127.0.0.1:9/oauth/token",
    "account_id": "acc",
    "client_id": "cid",
    "client_secret": "zoom-secret",
}


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver", "replica", "legal-hold", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def seed(s3: SeaweedS3, bucket: str) -> list[str]:
    """A few of our keys (one with a second version) and one key outside the prefix."""
    keys = [
        chunk_key(PREFIX, 1, 1, 3),
        chunk_key(PREFIX, 1, 4, 9),
        blob_key(PREFIX, "ab" + "1" * 62),
        checkpoint_key(PREFIX, 9),
    ]
    until = datetime.now(UTC) + timedelta(days=2)
    async with s3.client() as c:
        for i, key in enumerate([*keys, keys[0], "other/not-ours"]):
            await c.put_object(
                Bucket=bucket,
                Key=key,
                Body=f"body {i}\n".encode(),
                ObjectLockMode="GOVERNANCE",
                ObjectLockRetainUntilDate=until,
            )
    return keys


async def holds(s3: SeaweedS3, bucket: str, prefix: str = PREFIX) -> list[str]:
    found = []
    async with s3.client() as c:
        versions = await c.list_object_versions(Bucket=bucket, Prefix=prefix)
        for v in versions["Versions"]:
            head = await c.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            found.append(head.get("ObjectLockLegalHoldStatus", "OFF"))
    return found


async def bypass_delete(s3: SeaweedS3, bucket: str, key: str) -> Any:
    async with s3.admin_client() as admin:
        versions = await admin.list_object_versions(Bucket=bucket, Prefix=key)
        version = versions["Versions"][-1]["VersionId"]
        return await admin.delete_object(
            Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True
        )


def test_legal_hold_on_off_idempotent_and_resumable(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    keys = asyncio.run(seed(s3, locked_bucket))
    path = write_config(
        tmp_path, NO_SIM, extra=replica_section(s3, locked_bucket, tmp_path, lock_mode="GOVERNANCE")
    )

    # An interrupted earlier run: one version already on.
    async def one_on() -> None:
        async with s3.client() as c:
            versions = await c.list_object_versions(Bucket=locked_bucket, Prefix=keys[1])
            await c.put_object_legal_hold(
                Bucket=locked_bucket,
                Key=keys[1],
                VersionId=versions["Versions"][0]["VersionId"],
                LegalHold={"Status": "ON"},
            )

    asyncio.run(one_on())
    done = cli(path, "--on")
    assert done.returncode == 0, done.stderr
    assert "on 5 object versions" in done.stdout and "4 changed, 1 already ON" in done.stdout
    assert asyncio.run(holds(s3, locked_bucket)) == ["ON"] * 5
    assert asyncio.run(holds(s3, locked_bucket, "other/")) == ["OFF"]  # not ours: untouched
    with pytest.raises(ClientError):  # GOVERNANCE bypass does not lift a legal hold
        asyncio.run(bypass_delete(s3, locked_bucket, keys[2]))

    again = cli(path, "--on")
    assert again.returncode == 0, again.stderr
    assert "0 changed, 5 already ON" in again.stdout

    off = cli(path, "--off")
    assert off.returncode == 0, off.stderr
    assert "5 changed" in off.stdout
    assert asyncio.run(holds(s3, locked_bucket)) == ["OFF"] * 5
    asyncio.run(bypass_delete(s3, locked_bucket, keys[2]))  # the hold was what refused it


def test_legal_hold_needs_on_or_off_and_a_reachable_bucket(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    path = write_config(tmp_path, NO_SIM, extra=replica_section(s3, locked_bucket, tmp_path))
    assert cli(path).returncode == 2  # argparse: one of --on / --off
    path.write_text(path.read_text().replace(s3.endpoint_url, "http://127.0.0.1:9"))
    done = cli(path, "--on")
    assert done.returncode == 2 and "cannot reach the bucket" in done.stderr
    assert "Traceback" not in done.stderr and s3.secret_access_key not in done.stderr
