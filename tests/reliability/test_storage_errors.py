"""A failing or full disk: stop with a clear message and exit 1, never retry an fsync on lost
data, never record an attachment as failed for a local fault; the archive stays valid, and a
run after the disk is healthy again completes it with nothing lost.

- EIO from fsync: `oslayer --fail-fsync-under ...` (a dying disk cannot be had on demand).
- ENOSPC: a real, small tmpfs mounted for the test (root only, as in CI), then grown.
- EFBIG: RLIMIT_FSIZE in the child, which works without privileges.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.simulator import Simulator
from archiver.store.verify import verify_archive
from tests.reliability.audit import Truth, crash_audit, final_audit
from tests.reliability.harness import (
    archiver_config,
    child_env,
    finish,
    launch,
    oslayer,
    small_account,
    tail,
)

# What the one line on stderr may say: the OS's words, or SQLite's for the same fault.
NO_SPACE = ("No space left on device", "database or disk is full")
TOO_LARGE = ("File too large", "disk I/O error")
IO_ERROR = ("Input/output error",)


def assert_clear_stop(code: int, log: Path, causes: tuple[str, ...]) -> None:
    text = tail(log, 20000)
    assert code == 1, text[-3000:]
    said = [line for line in text.splitlines() if line.startswith("zoom-sms-archiver: ")]
    assert len(said) == 1, text[-3000:]
    assert any(cause in said[0] for cause in causes), said


def assert_no_traceback(log: Path) -> None:
    text = tail(log, 20000)
    assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]


def journal_records(journal: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in journal.read_text().splitlines()]


async def complete_after(root: Path, config: Path, log: Path, sim: Simulator) -> None:
    """The disk is healthy again: a plain run must finish the archive with nothing lost."""
    proc = await launch(config, log, "--once")
    assert await finish(proc, 180.0) == 0, tail(log)
    audit = final_audit(root, Truth.of(sim))
    assert audit.ok, audit.summary()
    assert audit.attachments_failed == 0


@pytest.mark.parametrize(
    ("where", "fail_after"),
    [("/archive/manifest/", 3), ("/archive/tmp/", 2)],
    ids=["manifest", "download"],
)
async def test_fsync_eio_stops_the_daemon_and_is_never_retried(
    tmp_path: Path, where: str, fail_after: int
) -> None:
    async with Simulator(small_account(5, attachment_probability=0.5)) as sim:
        config = archiver_config(tmp_path, sim)
        root, journal, log = tmp_path / "archive", tmp_path / "journal", tmp_path / "log"
        entry = oslayer(journal, "--fail-fsync-under", where, "--fail-after", str(fail_after))
        proc = await launch(config, log, "--once", env=child_env(), entry=entry)
        code = await finish(proc, 60.0)
        assert_clear_stop(code, log, IO_ERROR)
        records = journal_records(journal)
        failed = [r for r in records if r["op"] == "fsync_failed"]
        # One failed fsync, and no second try on that file: its dirty pages may be gone.
        assert len(failed) == 1, failed
        assert not [
            r for r in records[records.index(failed[0]) + 1 :] if r.get("path") == failed[0]["path"]
        ]
        report = verify_archive(root)
        assert report.ok, report.problems
        audit, _ = crash_audit(root, Truth.of(sim))
        assert audit.ok, audit.summary()
        lines = [json.loads(x) for p in (root / "manifest").glob("*.jsonl") for x in p.open()]
        # A local disk fault is not the attachment's fault: nothing may be recorded as failed.
        assert not [line for line in lines if line["kind"] == "attachment_failed"]
        await complete_after(root, config, log, sim)


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small tmpfs of our own (size: the test's parameter). CI runs as root and can mount;
    elsewhere the test is skipped, saying why."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# Sizes at which the disk fills at different places (state database, manifest, a download).
@pytest.mark.parametrize("small_disk", ["128k", "384k", "768k", "1m"], indirect=True)
async def test_full_disk_stops_cleanly_and_a_run_after_freeing_space_completes(
    tmp_path: Path, small_disk: Path
) -> None:
    async with Simulator(small_account(9, attachment_probability=0.5)) as sim:
        root = small_disk / "archive"
        config = archiver_config(tmp_path, sim, root=root)
        log = tmp_path / "log"
        proc = await launch(config, log, "--once")
        code = await finish(proc, 60.0)
        assert_clear_stop(code, log, NO_SPACE)
        report = verify_archive(root)
        assert report.ok, report.problems
        audit, _ = crash_audit(root, Truth.of(sim))
        assert audit.ok, audit.summary()
        # Free space: the same filesystem grows, as after an operator cleaned up.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        await complete_after(root, config, log, sim)


async def test_file_size_limit_stops_cleanly_and_a_run_without_it_completes(
    tmp_path: Path,
) -> None:
    async with Simulator(small_account(13, attachment_probability=0.5)) as sim:
        config = archiver_config(tmp_path, sim)
        root, journal, log = tmp_path / "archive", tmp_path / "journal", tmp_path / "log"
        entry = oslayer(journal, "--fsize", str(96 * 1024))
        proc = await launch(config, log, "--once", env=child_env(), entry=entry)
        code = await finish(proc, 60.0)
        assert_clear_stop(code, log, TOO_LARGE)
        report = verify_archive(root)
        assert report.ok, report.problems
        await complete_after(root, config, log, sim)


async def test_a_storage_error_stop_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    # The writer fails: sync and downloads both see it, and both tasks end with the error.
    async with Simulator(small_account(5, attachment_probability=0.5)) as sim:
        config = archiver_config(tmp_path, sim)
        journal, log = tmp_path / "journal", tmp_path / "log"
        entry = oslayer(journal, "--fail-fsync-under", "/archive/manifest/", "--fail-after", "3")
        proc = await launch(config, log, "--once", entry=entry)
        assert_clear_stop(await finish(proc, 60.0), log, IO_ERROR)
        assert_no_traceback(log)
