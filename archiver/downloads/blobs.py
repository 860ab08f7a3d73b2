"""Content-addressed blob storage: `ROOT/blobs/sha256/ab/<64 hex>`, read-only, fsynced.

The blob path is built only from the SHA-256 we computed, never from anything Zoom sent, so
a hostile attachment name cannot touch the filesystem. A crash at any point leaves either the
blob in place (and the next run finds it) or a stale file in `tmp/` (cleaned at start).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from archiver.store.crash import crash_point
from archiver.store.layout import blob_relpath


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(root: Path, tmp_file: Path, sha256: str) -> str:
    relpath = blob_relpath(sha256)
    target = root / relpath
    if target.exists():
        # Identical content is stored once; the existing blob already holds these bytes. But
        # its name may not be durable yet: another download of the same file may have renamed
        # it in a moment ago and not yet fsynced the folder, and our attachment line must not
        # reach the disk before the blob it names.
        tmp_file.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return relpath
    fan_out = target.parent
    if not fan_out.exists():
        fan_out.mkdir(mode=0o700, parents=True, exist_ok=True)
        _fsync_dir(fan_out.parent)
    os.chmod(tmp_file, 0o444)
    crash_point("blob_before_rename")
    os.rename(tmp_file, target)
    crash_point("blob_after_rename")
    _fsync_dir(fan_out)
    return relpath


async def commit_blob(root: Path, tmp_file: Path, sha256: str) -> str:
    """Move a fully written, fsynced temp file into the blob store; returns its relative path."""
    return await asyncio.to_thread(_commit, root, tmp_file, sha256)
