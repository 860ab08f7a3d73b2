"""The replicator in the real daemon, against the simulator and SeaweedFS over loopback."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from archiver import daemon
from archiver.ops.status import read_status, render
from archiver.replica.audit import audit_bucket
from archiver.replica.bucket import BlobKey, ChunkKey, parse_key
from archiver.simulator import Simulator, SimulatorConfig
from tests.helpers import load, manifest_lines, write_config
from tests.replica.rig import (
    deny_deletes,
    list_keys,
    local_segments,
    read_object,
    replica_section,
    segments_from_bucket,
)
from tests.replica.seaweed import SeaweedS3

PREFIX = "acme/"


def sim_config(**changes: object) -> SimulatorConfig:
    base = SimulatorConfig(seed=5, sessions=12, history_days=60, attachment_probability=0.3)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.whole_run
async def test_a_full_run_replicates_byte_for_byte_and_locked(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    await deny_deletes(s3, locked_bucket)  # deploy/README.md's deny statement
    async with Simulator(sim_config()) as sim:
        extra = replica_section(s3, locked_bucket, tmp_path, chunk_max_bytes=65536)
        path = write_config(tmp_path, sim, extra=extra)
        outcome = await daemon.run(load(path), once=True)
    assert outcome.ok, outcome.summary()
    report = read_status(load(path))
    assert report.replica is not None
    assert report.replica["replicated_seq"] == report.manifest_seq
    assert report.replica["lines_behind"] == 0 and report.replica["uploads"]["chunk"] > 1
    shown = f"replica: s3://{locked_bucket}/{PREFIX} holds the manifest through seq"
    assert shown in render(report)
    root = tmp_path / "archive"
    async with s3.client() as c:
        rebuilt = await segments_from_bucket(c, locked_bucket, PREFIX)
        keys = await list_keys(c, locked_bucket, PREFIX)
        # Everything, the run's own "stop" line and closing checkpoint too: --once exited 0.
        assert rebuilt == local_segments(root)
        assert list(manifest_lines(root))[-1]["event"] == "stop"
        chunks = [parse_key(PREFIX, k) for k in keys if "/manifest/" in k]
        assert len(chunks) > 1, "chunk_max_bytes should have cut several chunks"
        blobs = {p.sha256 for k in keys if isinstance(p := parse_key(PREFIX, k), BlobKey)}
        attached = {line["sha256"] for line in manifest_lines(root) if line["kind"] == "attachment"}
        assert attached and attached <= blobs
        policy = datetime.now(UTC) + timedelta(days=1)  # retention_days = 1, from `at`
        for key in keys:
            retention = await c.get_object_retention(Bucket=locked_bucket, Key=key)
            assert retention["Retention"]["Mode"] == "COMPLIANCE"
            assert retention["Retention"]["RetainUntilDate"] >= policy, key
        # The archiver's own credentials cannot delete or overwrite what it wrote.
        victim = next(k for k in keys if isinstance(parse_key(PREFIX, k), ChunkKey))
        versions = await c.list_object_versions(Bucket=locked_bucket, Prefix=victim)
        version = versions["Versions"][0]["VersionId"]
        with pytest.raises(ClientError):
            await c.delete_object(Bucket=locked_bucket, Key=victim, VersionId=version)
        with pytest.raises(ClientError) as plain:  # no version id: it would leave a marker
            await c.delete_object(Bucket=locked_bucket, Key=victim)
        assert plain.value.response["Error"]["Code"] == "AccessDenied"
        after = await c.list_object_versions(Bucket=locked_bucket, Prefix=victim)
        assert not after.get("DeleteMarkers") and len(after["Versions"]) == 1
        with pytest.raises(ClientError) as overwrite:  # how the archiver writes: never over
            await c.put_object(Bucket=locked_bucket, Key=victim, Body=b"x", IfNoneMatch="*")
        assert overwrite.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        with pytest.raises(ClientError):
            await c.put_object_retention(
                Bucket=locked_bucket,
                Key=victim,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC)},
            )
        # A plain PUT (no If-None-Match) with the same credentials: Object Lock does not
        # refuse it (only a bucket policy on s3:if-none-match could, deploy/README.md); it
        # adds a version. The original stays, locked, and `replica verify` names the rewrite.
        original = await read_object(c, locked_bucket, victim)
        await c.put_object(Bucket=locked_bucket, Key=victim, Body=b"x")
        after = await c.list_object_versions(Bucket=locked_bucket, Prefix=victim)
        assert len(after["Versions"]) == 2
        oldest = after["Versions"][-1]
        kept = await c.get_object(Bucket=locked_bucket, Key=victim, VersionId=oldest["VersionId"])
        async with kept["Body"] as body:
            assert await body.read() == original
        assert kept["ObjectLockMode"] == "COMPLIANCE"
        report = await audit_bucket(c, load(path))
        assert ("second_version", victim) in {(p.kind, p.key) for p in report.problems}


@pytest.mark.parametrize("case", ["no_lock", "wrong_secret"])
def test_a_bucket_that_cannot_hold_worm_records_is_exit_2(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str, plain_bucket: str, case: str
) -> None:
    import subprocess
    import sys

    sim = {
        "api_url": "http://127.0.0.1:9/v2",
        "oauth_url": "http://127.0.0.1:9/oauth/token",
        "account_id": "acc",
        "client_id": "cid",
        "client_secret": "zoom-secret",
    }
    bucket = plain_bucket if case == "no_lock" else locked_bucket
    secret = "0" * 40 if case == "wrong_secret" else None
    extra = replica_section(s3, bucket, tmp_path, secret=secret)
    path = write_config(tmp_path, sim, extra=extra)
    done = subprocess.run(
        [sys.executable, "-m", "archiver", "run", "--config", str(path), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    if case == "no_lock":
        assert "no Object Lock" in done.stderr and 'lock_mode = "none"' in done.stderr
    else:
        assert "refused the credentials" in done.stderr
        assert "0" * 40 not in done.stderr and s3.secret_access_key not in done.stderr
    assert not (tmp_path / "archive").exists()  # refused before ROOT was touched
