"""Peak RSS stays flat while a large blob replicates: the body is streamed, never held.

The uploads run in a child process. A small blob goes first, so imports, the client and its
connection pool are in the baseline; then, before each large blob, the kernel's peak (VmHWM)
is reset to the current RSS (`/proc/self/clear_refs`), and the peak after the upload is read
back. Its growth must stay under 10 MB whatever the blob's size: a 60 MiB blob (one PUT) and
a 256 MiB one (multipart, parts in flight at once) here, 2 GiB in the slow test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.replica.seaweed import SeaweedS3

GROWTH_LIMIT = 10 * 1000 * 1000

CHILD = r"""
import asyncio, gc, hashlib, json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.config import ReplicaConfig, Secret
from archiver.replica import bucket as b
from archiver.replica.upload import upload_blob

def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)

def sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()

async def main(endpoint, key_id, secret, bucket, *paths) -> None:
    config = ReplicaConfig(enabled=True, endpoint_url=endpoint, bucket=bucket, access_key_id=key_id)
    until = datetime.now(UTC) + timedelta(days=1)
    growth = {}
    async with b.open_client(config, Secret(secret)) as c:
        for path in map(Path, paths):
            digest = sha(path)
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = status("VmHWM")
            await upload_blob(
                c, bucket, b.blob_key("m/", digest), path, digest, mode="COMPLIANCE", until=until
            )
            growth[path.name] = status("VmHWM") - before
    print(json.dumps(growth))

asyncio.run(main(*sys.argv[1:]))
"""


def _fill(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for i in range(size >> 20):
            fh.write(block[:-8] + i.to_bytes(8, "big"))  # every MiB different, cheaply


def _peak_growth(tmp_path: Path, s3: SeaweedS3, bucket: str, *sizes: int) -> dict[str, int]:
    """The growth of peak RSS over each upload, by file name (`small`, then `<size>`)."""
    paths = [tmp_path / "small", *(tmp_path / str(size) for size in sizes)]
    for path, size in zip(paths, (1 << 20, *sizes), strict=True):
        _fill(path, size)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            s3.endpoint_url,
            s3.access_key_id,
            s3.secret_access_key,
            bucket,
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    peaks: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return peaks


def test_peak_rss_is_flat_while_a_256_mib_blob_replicates(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    growth = _peak_growth(tmp_path, s3, locked_bucket, 60 << 20, 256 << 20)
    print("growth", growth)
    assert growth[str(60 << 20)] <= GROWTH_LIMIT, growth
    assert growth[str(256 << 20)] <= GROWTH_LIMIT, growth


@pytest.mark.slow
def test_peak_rss_is_flat_while_a_2_gib_blob_replicates(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    growth = _peak_growth(tmp_path, s3, locked_bucket, 2 << 30)
    print("growth", growth)
    assert growth[str(2 << 30)] <= GROWTH_LIMIT, growth
