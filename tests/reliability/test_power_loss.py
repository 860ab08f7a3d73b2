"""Power loss before fsync: what was not fsynced is dropped, and nothing durable is lost.

The daemon runs under `oslayer` (every fsync journalled), is SIGKILLed at a random instant or
at a named point where written data is not yet durable, and `powerloss.power_cut` rolls the
archive back to what the disk could hold after a power cut at that instant. After each cut
the archive must already be consistent (a page or attachment wholly there or not at all, no
token ahead of its page), and the last, clean run completes it with nothing lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import pytest

from archiver.downloads.blobs import commit_blob
from archiver.simulator import Simulator
from archiver.store.layout import blob_relpath
from tests.reliability.audit import Truth, crash_audit, final_audit
from tests.reliability.harness import (
    FAULTS,
    NO_FAULTS,
    archiver_config,
    child_env,
    finish,
    launch,
    manifest_size,
    oslayer,
    small_account,
    tail,
    wait_writing,
)
from tests.reliability.powerloss import CutReport, mark_durable, power_cut

CYCLES = 12  # every other cycle crashes at the next of the POINTS: each of them once
# Where data has been written but is not durable yet, or a name is not yet fsynced.
POINTS = (
    "manifest_before_fsync@2",
    "manifest_before_fsync@4",
    "manifest_mid_write@3",
    "blob_after_rename@1",
    "blob_after_rename@3",
    "token_after_save@2",
)


async def test_power_cut_keeps_whole_pages_and_files_and_a_later_run_completes(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    async with Simulator(small_account(11, **FAULTS)) as sim:
        config = archiver_config(tmp_path, sim)
        root, journal, log = tmp_path / "archive", tmp_path / "fsync.journal", tmp_path / "log"
        root.mkdir()  # the operator's directory (systemd's StateDirectory): durable already
        total = CutReport()
        before = b""
        torn = b""  # what the last power cut left after the manifest's last whole line
        recovered = 0
        for cycle in range(CYCLES):
            mark_durable(root, journal)
            crash_at = POINTS[(cycle // 2) % len(POINTS)] if cycle % 2 else None
            size = manifest_size(root) if (root / "manifest").is_dir() else 0
            proc = await launch(
                config, log, "--once", env=child_env(crash_at), entry=oslayer(journal)
            )
            if crash_at is None and await wait_writing(root, proc, size):
                await asyncio.sleep(rng.uniform(0.05, 0.6))
            if crash_at is None and proc.returncode is None:
                proc.kill()
            code = await finish(proc, 20.0)
            assert code in (0, -9), tail(log)
            if torn:
                # The start cut the torn write, and kept its bytes (each kill comes after
                # the start has appended, so after the cut).
                assert torn in kept_tails(root), f"cycle {cycle}: torn tail not in recovered/"
                recovered += 1
            cut = power_cut(root, journal, rng, lose_state=cycle % 4 == 3)
            torn = torn_tail(root)
            total.bytes_dropped += cut.bytes_dropped
            total.entries_dropped += cut.entries_dropped
            total.bytes_zeroed += cut.bytes_zeroed
            audit, before = crash_audit(root, Truth.of(sim), before)
            assert audit.ok, f"after the power cut of cycle {cycle} ({crash_at}): {audit.summary()}"
            if cycle % 3 == 2:
                sim.add_messages(rng.randint(2, 6), attachments=rng.randint(1, 3))
        sim.set_switches(**NO_FAULTS)
        proc = await launch(config, log, "--once")
        assert await finish(proc, 180.0) == 0, tail(log)
        audit = final_audit(root, Truth.of(sim), before)
    assert audit.ok, audit.summary()
    assert audit.attachments_failed == 0 and audit.attachments_expected > 0
    # The cuts really took something away: unsynced bytes and unsynced names.
    assert total.bytes_dropped > 0, total
    assert total.entries_dropped > 0, total
    assert recovered > 0, "no cut left a torn write: the recovered/ check never ran"


def torn_tail(root: Path) -> bytes:
    """The bytes after the last newline of the last segment: a write the cut left unfinished."""
    segments = sorted((root / "manifest").glob("*.jsonl")) if (root / "manifest").is_dir() else []
    if not segments:
        return b""
    data = segments[-1].read_bytes()
    return data[data.rfind(b"\n") + 1 :]


def kept_tails(root: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((root / "recovered").glob("*.tail"))]


async def test_a_deduplicated_blob_is_durable_before_its_second_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two downloads of the same file: the second finds the blob already renamed in by the
    first, which may not have fsynced the folder yet. The second's attachment line follows at
    once, so the second commit must make the name durable itself."""
    data = b"the same file, twice"
    sha = hashlib.sha256(data).hexdigest()
    target = tmp_path / blob_relpath(sha)
    target.parent.mkdir(parents=True)
    target.write_bytes(data)  # renamed in by the first download, its folder not yet fsynced
    second = tmp_path / "tmp.part"
    second.write_bytes(data)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)  # a power cut cannot be had: watch the syncs
    assert await commit_blob(tmp_path, second, sha) == blob_relpath(sha)
    assert str(target.parent) in synced
    assert not second.exists()
