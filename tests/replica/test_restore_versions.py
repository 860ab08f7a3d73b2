"""`restore` reads the bucket by version, never its latest view: a rewrite by a plain PUT (which
Object Lock does not stop: it adds a version), a delete marker on a chunk and a tail removed
without a trace are refused, naming the keys, before a byte is written. `--oldest-versions`
takes the WORM originals; `--upto` at the damage restores what is there and keeps the later
checkpoints aside in recovered/. Copies of the session's replicated GOVERNANCE bucket."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.replica.bucket import ChunkKey, parse_key
from archiver.store.manifest import canonical, line_hash, record_digest
from tests.replica.rig import (
    PREFIX,
    Replicated,
    chunk_keys,
    clone,
    config_for,
    local_segments,
    read_object,
    segments_from_bucket,
)
from tests.replica.seaweed import SeaweedS3


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def forge(lines: list[bytes], prev: str) -> tuple[list[bytes], str]:
    """Every message's text rewritten, the chain kept consistent from `prev`."""
    out = []
    for raw in lines:
        obj = json.loads(raw)
        if obj["kind"] == "message":
            obj["record"]["message"] = "FORGED"
            obj["digest"] = record_digest(obj["record"])
        obj["prev"] = prev
        body = canonical(obj)
        prev = line_hash(body)
        out.append(body + b"\n")
    return out, prev


async def test_a_rewrite_by_the_archivers_own_key_is_refused_and_the_originals_restored(
    s3: SeaweedS3, replicated: Replicated, tmp_path: Path
) -> None:
    bucket = await clone(s3, replicated.bucket, "restore-rewritten")
    async with s3.client() as c:  # the archiver's own credentials
        original = await segments_from_bucket(c, bucket, PREFIX)
        keys = await chunk_keys(c, bucket)
        prev = line_hash((await read_object(c, bucket, keys[0])).splitlines()[-1])
        for key in keys[1:]:
            forged, prev = forge((await read_object(c, bucket, key)).splitlines(), prev)
            await c.put_object(  # no If-None-Match: the lock lets it add a version
                Bucket=bucket,
                Key=key,
                Body=b"".join(forged),
                ObjectLockMode="GOVERNANCE",
                ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=3),
            )
    path = config_for(s3, bucket, tmp_path, tmp_path / "no-root")
    target = tmp_path / "restored"
    trust = ("--trust", str(replicated.pub))
    code, out, err = await cli("restore", "--config", str(path), "--to", str(target), *trust)
    assert code == 1, out + err
    assert "more than one version or a delete marker" in err and keys[1] in err
    assert "--oldest-versions" in err and not target.exists()

    code, out, err = await cli(
        "restore", "--config", str(path), "--to", str(target), *trust, "--oldest-versions"
    )
    assert code == 0, out + err
    assert f"took the oldest version of {len(keys) - 1} key(s)" in err
    assert ": OK" in out and "checkpoints" in out  # verify --trust on the restored ROOT
    assert local_segments(target) == original
    assert b"FORGED" not in b"".join(local_segments(target).values())


async def test_a_hidden_tail_is_refused_and_upto_keeps_the_later_checkpoints_aside(
    s3: SeaweedS3, replicated: Replicated, tmp_path: Path
) -> None:
    bucket = await clone(s3, replicated.bucket, "restore-tail")
    async with s3.admin_client() as admin:
        keys = await chunk_keys(admin, bucket)
        last = keys[-1]
        await admin.delete_object(Bucket=bucket, Key=last)  # a delete marker on the tail
    path = config_for(s3, bucket, tmp_path, tmp_path / "no-root")
    target = tmp_path / "restored"
    code, out, err = await cli("restore", "--config", str(path), "--to", str(target))
    assert code == 1 and last in err and "delete marker" in err, out + err
    assert not target.exists()

    async with s3.admin_client() as admin:  # the tail gone without a trace: versions, marker
        listed = await admin.list_object_versions(Bucket=bucket, Prefix=last)
        for entry in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
            await admin.delete_object(
                Bucket=bucket,
                Key=last,
                VersionId=entry["VersionId"],
                BypassGovernanceRetention=True,
            )
    code, out, err = await cli("restore", "--config", str(path), "--to", str(target))
    head = parse_key(PREFIX, keys[-2])
    assert isinstance(head, ChunkKey)
    assert code == 1 and "sign seq beyond its last chunk" in err, out + err
    assert f"--upto {head.last}" in err and not target.exists()

    code, out, err = await cli(
        "restore", "--config", str(path), "--to", str(target), "--upto", str(head.last)
    )
    aside = sorted(p.name for p in (target / "recovered" / "checkpoints").iterdir())
    later = sorted(
        p.name
        for p in (replicated.root / "checkpoints").iterdir()
        if int(p.name.split(".")[0]) > head.last
    )
    assert aside == later and later, out + err
    assert f"{len(later)} checkpoint(s) beyond seq {head.last}" in err
    assert not (target / "RESTORE-INCOMPLETE").exists()
    whole = b"".join(local_segments(target).values())
    assert whole.count(b"\n") == head.last
