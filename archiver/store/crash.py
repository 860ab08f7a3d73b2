"""Crash-test hooks: die by SIGKILL at a named point when ARCHIVER_CRASH_AT names it.

Crash tests run the archiver in a subprocess with `ARCHIVER_CRASH_AT=<point>` (die the first
time the point is reached) or `ARCHIVER_CRASH_AT=<point>@<n>` (die the n-th time: a crash deep
inside a run, not always at its first append), then check that the archive survives
(DESIGN.md, invariant 3). The variable is read once, at import, so an unarmed point costs one
string comparison on the hot path.

Points: the manifest writer's `manifest_before_write`, `manifest_mid_write` (half of the
batch's bytes written, then killed), `manifest_before_fsync`, `manifest_after_fsync` (durable,
index not yet updated); the blob store's `blob_before_rename`, `blob_after_rename` (renamed,
directory not yet fsynced); the state's `token_before_save`, `token_after_save` (around the
commit of a sync token); the replicator's `replica_before_chunk_put` (its blobs are in, the
chunk is not), `replica_after_chunk_put` (the chunk is in the bucket, its position not yet in
the state) and `replica_mid_multipart` (a blob's second part is up, the upload unfinished).
"""

from __future__ import annotations

import itertools
import os
import signal
from typing import Final

ENV_VAR: Final = "ARCHIVER_CRASH_AT"
_NAME, _, _NTH = (os.environ.get(ENV_VAR) or "").partition("@")
_ARMED: Final = _NAME or None
_AT: Final = int(_NTH) if _NTH.isdigit() and int(_NTH) > 0 else 1
# next() on itertools.count is atomic under the GIL: blob commits hit their points from
# several threads at once, and each hit must be counted exactly once.
_hits = itertools.count(1)


def reached(name: str) -> bool:
    """Count one arrival at point `name`; True when this is the arrival to die at.

    For points that must prepare the damage first (a half-written batch), then call `die()`.
    """
    return name == _ARMED and next(_hits) == _AT


def die() -> None:
    """SIGKILL this process: no cleanup, no flush, no atexit."""
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(name: str) -> None:
    """SIGKILL this process if the crash test asked for point `name` (this arrival)."""
    if reached(name):
        die()
