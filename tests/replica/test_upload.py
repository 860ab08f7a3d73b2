"""Blob uploads: multipart above 64 MiB, locked, resumable; stale uploads aborted."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.config import ReplicaConfig, Secret
from archiver.replica import bucket as b
from archiver.replica.upload import MULTIPART_ABOVE, PutOutcome, abort_stale_uploads, upload_blob
from tests.replica.rig import read_object
from tests.replica.seaweed import SeaweedS3


async def test_multipart_blob_is_whole_locked_and_resumable(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    path = tmp_path / "blob"
    with path.open("wb") as fh:
        for _ in range(MULTIPART_ABOVE // (1 << 20) + 3):
            fh.write(os.urandom(1 << 20))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    key = b.blob_key("p/", sha)
    until = datetime.now(UTC) + timedelta(days=1)
    config = ReplicaConfig(
        enabled=True,
        endpoint_url=s3.endpoint_url,
        bucket=locked_bucket,
        access_key_id=s3.access_key_id,
    )
    async with b.open_client(config, Secret(s3.secret_access_key)) as c:
        await c.create_multipart_upload(Bucket=locked_bucket, Key="p/stale")
        assert await abort_stale_uploads(c, locked_bucket, "p/") == 1
        args = {"mode": "COMPLIANCE", "until": until}
        assert await upload_blob(c, locked_bucket, key, path, sha, **args) is PutOutcome.CREATED
        again = await upload_blob(c, locked_bucket, key, path, sha, **args)
        assert again is PutOutcome.ALREADY_THERE
        assert hashlib.sha256(await read_object(c, locked_bucket, key)).hexdigest() == sha
        retention = await c.get_object_retention(Bucket=locked_bucket, Key=key)
        assert retention["Retention"]["Mode"] == "COMPLIANCE"
        uploads = await c.list_multipart_uploads(Bucket=locked_bucket, Prefix="p/")
        assert not uploads.get("Uploads")
