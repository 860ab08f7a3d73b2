"""Crash-test hooks: die by SIGKILL at a named point when ARCHIVER_CRASH_AT names it.

Crash tests run the archiver in a subprocess with `ARCHIVER_CRASH_AT=<point>` and then check that
the archive survives (DESIGN.md, invariant 3). The variable is read once, at import, so an
unarmed point costs one string comparison on the hot path.

Points used by the manifest writer: `manifest_before_write`, `manifest_mid_write` (half of the
batch's bytes written, then killed), `manifest_before_fsync`, `manifest_after_fsync` (durable,
index not yet updated). Other modules add their own names (blobs, token saves).
"""

from __future__ import annotations

import os
import signal
from typing import Final

ENV_VAR: Final = "ARCHIVER_CRASH_AT"
_ARMED: Final = os.environ.get(ENV_VAR) or None


def armed(name: str) -> bool:
    """True when this process is meant to die at `name` (for points that prepare first)."""
    return name == _ARMED


def crash_point(name: str) -> None:
    """SIGKILL this process if the crash test asked for point `name`; no cleanup runs."""
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
