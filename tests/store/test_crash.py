"""Real crashes: a subprocess killed by SIGKILL at each point of the append path (invariant 3)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.store.state import State
from archiver.store.verify import verify_archive
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message, read_lines, segment

PROJECT = Path(__file__).resolve().parents[2]


def run_child(root: Path, first: int, count: int, crash_at: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "ARCHIVER_CRASH_AT"}
    if crash_at:
        env["ARCHIVER_CRASH_AT"] = crash_at
    child = subprocess.run(
        [sys.executable, "-m", "tests.store.crash_child", str(root), str(first), str(count)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode in (0, -signal.SIGKILL), child.stderr.decode()
    return child.returncode


@pytest.mark.parametrize(
    ("point", "lines_after_crash"),
    [
        ("manifest_before_write", 5),
        ("manifest_mid_write", None),  # 5 and a torn fragment
        ("manifest_before_fsync", 10),  # written to the page cache, which outlives the process
        ("manifest_after_fsync", 10),  # durable, index not updated
    ],
)
async def test_crash_then_restart_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, point: str, lines_after_crash: int | None
) -> None:
    root = tmp_path / "archive"
    assert run_child(root, 0, 5) == 0
    assert run_child(root, 5, 5, crash_at=point) == -signal.SIGKILL

    data = segment(root).read_bytes()
    if lines_after_crash is None:
        assert not data.endswith(b"\n")
        assert data.count(b"\n") >= 5
    else:
        assert data.count(b"\n") == lines_after_crash
        assert verify_archive(root).ok  # a crash before or after fsync leaves a valid file

    state = State.open(root)
    writer = await ManifestWriter.open(root, state)
    try:
        # The daemon's next run re-fetches the same page (its token was never saved).
        result = await writer.append_messages(
            "s", [message(n, text="x" * n) for n in range(10)], "sync"
        )
        assert result.changed == 0
        assert result.new == 10 - (lines_after_crash or data.count(b"\n"))
    finally:
        await writer.close()
        state.close()

    lines = read_lines(root)
    ids = [line["message_id"] for line in lines if line["kind"] == "message"]
    assert sorted(ids) == sorted(f"msg-{n}" for n in range(10))  # each exactly once
    repaired = [line for line in lines if line.get("event") == "torn_tail_repaired"]
    assert len(repaired) == (1 if lines_after_crash is None else 0)
    if lines_after_crash is None:
        # The cut bytes were moved, not deleted: the torn fragment, byte for byte.
        fragment = data[data.rindex(b"\n") + 1 :]
        kept = sorted((root / "recovered").iterdir())
        assert [p.read_bytes() for p in kept] == [fragment]
        assert repaired[0]["recovered"] == f"recovered/{kept[0].name}"
        assert repaired[0]["sha256"] == hashlib.sha256(fragment).hexdigest()
    else:
        assert not (root / "recovered").exists()
    report = verify_archive(root)
    assert report.ok, report.problems
    assert report.messages == 10
