"""`ARCHIVER_CRASH_AT=<point>@<n>`: the n-th arrival dies, not the first; the token points.

The crash harness relies on both: `@n` puts named crashes deep inside a run, and the token
points sit on either side of the commit that invariant 4 is about.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.harness import PROJECT, child_env


def run_child(root: Path, crash_at: str) -> tuple[int, list[str], str | None]:
    """Exit code, the message ids in the manifest, the token the state holds."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.crash_child", str(root)],
        cwd=PROJECT,
        env=child_env(crash_at),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr.decode()
    ids = []
    for segment in sorted((root / "manifest").glob("*.jsonl")):
        for raw in segment.read_bytes().split(b"\n"):
            with contextlib.suppress(ValueError):  # a torn tail, or the piece after the end
                ids.append(json.loads(raw)["message_id"])
    with sqlite3.connect(root / "state.sqlite3") as conn:
        row = conn.execute("SELECT newest_token FROM sessions WHERE session_id = 's'").fetchone()
    return done.returncode, ids, row[0] if row else None


PAGE1 = [f"p1-m{n}" for n in range(4)]
PAGE2 = [f"p2-m{n}" for n in range(4)]


@pytest.mark.parametrize(
    ("crash_at", "code", "ids", "token"),
    [
        ("manifest_before_write@1", -9, [], None),
        ("manifest_before_write@2", -9, PAGE1, "token-1"),
        ("manifest_before_write@3", 0, PAGE1 + PAGE2, "token-2"),  # never comes: a clean run
        # Half of page 2's bytes: its first whole lines and a torn one, and no token for it.
        ("manifest_mid_write@2", -9, [*PAGE1, *PAGE2[:2]], "token-1"),
        ("token_before_save@2", -9, PAGE1 + PAGE2, "token-1"),  # page 2 durable, token not
        ("token_after_save@1", -9, PAGE1, "token-1"),
        ("token_after_save@2", -9, PAGE1 + PAGE2, "token-2"),
    ],
)
def test_the_nth_arrival_dies_there(
    tmp_path: Path, crash_at: str, code: int, ids: list[str], token: str | None
) -> None:
    got = run_child(tmp_path / "archive", crash_at)
    assert got == (code, ids, token)
