"""`replica verify`: a real run replicated into SeaweedFS (GOVERNANCE, so the admin identity can
tamper with bypass), then each kind of damage done to a copy of that bucket, and named."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.replica.audit import AuditReport, audit_bucket
from archiver.replica.bucket import BlobKey, parse_key
from tests.helpers import load
from tests.replica.rig import (
    Replicated,
    chunk_keys,
    clone,
    config_for,
    list_keys,
    read_object,
    replace,
    version_of,
)
from tests.replica.seaweed import SeaweedS3

PREFIX = "acme/"


# Each damage: what it does to the copy; returns the (kind, key) the audit must name.
Damage = Callable[[Any, str], Awaitable[tuple[str, str]]]


async def missing_chunk(admin: Any, bucket: str) -> tuple[str, str]:
    chunks = await chunk_keys(admin, bucket)
    victim = chunks[1]
    await admin.delete_object(
        Bucket=bucket,
        Key=victim,
        VersionId=await version_of(admin, bucket, victim),
        BypassGovernanceRetention=True,
    )
    return "chunk_missing", chunks[2]


async def delete_marker(admin: Any, bucket: str) -> tuple[str, str]:
    victim = (await chunk_keys(admin, bucket))[1]
    await admin.delete_object(Bucket=bucket, Key=victim)  # no version: a marker on top
    return "delete_marker", victim


async def second_version(admin: Any, bucket: str) -> tuple[str, str]:
    victim = (await chunk_keys(admin, bucket))[1]
    data = await read_object(admin, bucket, victim)
    await admin.put_object(
        Bucket=bucket,
        Key=victim,
        Body=data,  # even the same bytes: a second version is a rewrite
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=3),
    )
    return "second_version", victim


async def short_retention(admin: Any, bucket: str) -> tuple[str, str]:
    victim = (await chunk_keys(admin, bucket))[0]
    await admin.put_object_retention(
        Bucket=bucket,
        Key=victim,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(hours=1)},
        BypassGovernanceRetention=True,
    )
    return "retention_short", victim


async def other_blob_bytes(admin: Any, bucket: str) -> tuple[str, str]:
    blobs = [k for k in await list_keys(admin, bucket) if isinstance(parse_key(PREFIX, k), BlobKey)]
    victim = blobs[0]
    data = await read_object(admin, bucket, victim)
    await replace(admin, bucket, victim, bytes(b ^ 1 for b in data[:1]) + data[1:])
    return "blob_hash_mismatch", victim


async def seq_gap(admin: Any, bucket: str) -> tuple[str, str]:
    victim = (await chunk_keys(admin, bucket))[1]
    data = await read_object(admin, bucket, victim)
    await replace(admin, bucket, victim, data[data.index(b"\n") + 1 :])  # its first line gone
    return "seq_gap", f"{victim}:1"


DAMAGES: dict[str, Damage] = {
    "missing_chunk": missing_chunk,
    "delete_marker": delete_marker,
    "second_version": second_version,
    "short_retention": short_retention,
    "other_blob_bytes": other_blob_bytes,
    "seq_gap": seq_gap,
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.whole_run
def test_a_clean_replica_passes_every_check(
    s3: SeaweedS3, replicated: Replicated, tmp_path: Path
) -> None:
    path = config_for(s3, replicated.bucket, tmp_path, replicated.root)
    done = cli("replica", "verify", "--config", str(path), "--trust", str(replicated.pub), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == []
    assert report["chunks"] > 2 and report["blobs_referenced"] > 0
    assert report["blobs_checked"] == report["blobs_referenced"]
    assert report["checkpoints_checked"] >= 1
    assert report["local"] == "same" and report["lag_lines"] >= 0  # the run's stop line
    # Without the local ROOT: said, and skipped.
    path = config_for(s3, replicated.bucket, tmp_path / "elsewhere", tmp_path / "no-root")
    done = cli("replica", "verify", "--config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "local archive absent" in done.stdout


@pytest.mark.parametrize("damage", list(DAMAGES))
async def test_each_damage_is_caught_and_named(
    s3: SeaweedS3, replicated: Replicated, tmp_path: Path, damage: str
) -> None:
    bucket = await clone(s3, replicated.bucket, f"audit-{damage.replace('_', '-')}")
    async with s3.admin_client() as admin:
        kind, key = await DAMAGES[damage](admin, bucket)
    path = config_for(s3, bucket, tmp_path, replicated.root)
    async with s3.client() as c:
        report: AuditReport = await audit_bucket(c, load(path))
    assert not report.ok
    found = {(p.kind, p.key) for p in report.problems}
    assert (kind, key) in found, report.problems


@pytest.mark.parametrize("case", ["wrong_secret", "missing_bucket", "unreachable"])
def test_a_bucket_that_cannot_be_read_is_one_line_and_exit_2(
    s3: SeaweedS3, replicated: Replicated, tmp_path: Path, case: str
) -> None:
    bucket = "no-such-bucket" if case == "missing_bucket" else replicated.bucket
    secret = "0" * 40 if case == "wrong_secret" else None
    path = config_for(s3, bucket, tmp_path, replicated.root, secret=secret)
    if case == "unreachable":
        path.write_text(path.read_text().replace(s3.endpoint_url, "http://127.0.0.1:9"))
    done = cli("replica", "verify", "--config", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert s3.secret_access_key not in done.stderr and "0" * 40 not in done.stderr
    expected = {
        "wrong_secret": "refused the credentials",
        "missing_bucket": "does not exist",
        "unreachable": "cannot reach the bucket",
    }
    assert expected[case] in done.stderr
