"""The attachment pipeline end to end: every attachment archived with the simulator's hash,
or visibly failed; URLs refreshed before and after they expire; memory flat; crashes safe."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.verify import verify_archive
from tests.helpers import assert_matches_truth, load, manifest_lines, write_config

MiB = 1024 * 1024


def sim_config(**changes: object) -> SimulatorConfig:
    base = SimulatorConfig(
        seed=31,
        sessions=25,
        history_days=200,
        attachment_probability=0.6,
        max_attachment_bytes=256 * 1024,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def expected_attachments(sim: Any) -> dict[tuple[str, str, str], str]:
    """(session, message, attachment) -> sha256, for every attachment of every message."""
    hashes = {
        item["attachment_id"]: item["sha256"]
        for item in sim.ground_truth()
        if item["kind"] == "attachment"
    }
    wanted = {}
    for item in sim.ground_truth():
        if item["kind"] != "message" or item.get("deleted"):
            continue
        for att in item["record"].get("attachments") or []:
            wanted[(item["session_id"], item["message_id"], att["id"])] = hashes[att["id"]]
    return wanted


def assert_attachments_complete(root: Path, sim: Any) -> dict[str, int]:
    wanted = expected_attachments(sim)
    assert wanted, "the scenario must have attachments"
    lines: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for line in manifest_lines(root):
        if line["kind"] in ("attachment", "attachment_failed"):
            key = (line["session_id"], line["message_id"], line["attachment_id"])
            lines.setdefault(key, []).append(line)
    missing = sorted(set(wanted) - set(lines))
    assert not missing, f"{len(missing)} attachments without a line, e.g. {missing[:3]}"
    for key, found in lines.items():
        assert len(found) == 1, f"{len(found)} lines for attachment {key}"
        line = found[0]
        assert line["kind"] == "attachment", f"{key} failed: {line.get('reason')}"
        assert line["sha256"] == wanted[key], f"wrong bytes for {key}"
        blob = root / line["blob"]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == line["sha256"]
    assert not list((root / "tmp").iterdir()), "stale files in tmp/"
    return {"attachments": len(lines)}


async def test_every_attachment_archived_with_the_simulators_hash(tmp_path: Path) -> None:
    async with Simulator(sim_config(quirk_duplicate=True)) as sim:
        path = write_config(tmp_path, sim)
        outcome = await daemon.run(load(path), once=True)
        assert outcome.ok
        root = tmp_path / "archive"
        assert_matches_truth(root, sim)
        assert_attachments_complete(root, sim)
        assert verify_archive(root).ok
        # Blobs are read-only and named only by their hash.
        for blob in (root / "blobs").rglob("*"):
            if blob.is_file():
                assert blob.stat().st_mode & 0o222 == 0
                assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()


async def test_short_jwt_lifetime_with_a_backlog_refreshes_urls_and_loses_nothing(
    tmp_path: Path,
) -> None:
    # URLs live 3 s; one slow download worker cannot drain the backlog in time, so most URLs
    # must be refreshed (before expiry, or after the file host refuses them).
    config = sim_config(sessions=8, jwt_lifetime=3.0, fault_slow=0.2, slow_seconds=0.2)
    async with Simulator(config) as sim:
        path = write_config(tmp_path, sim, downloads="workers = 1\nrefresh_margin = 1")
        outcome = await asyncio.wait_for(daemon.run(load(path), once=True), 240)
        assert outcome.ok
        assert_attachments_complete(tmp_path / "archive", sim)
        refreshes = sim.stats()["by_endpoint"].get("get_message", {}).get("requests", 0)
        assert refreshes > 0
        print(f"short-JWT scenario: {outcome.attachments} attachments, {refreshes} URL refreshes")


async def test_expired_jwt_answered_200_with_json_is_never_stored(tmp_path: Path) -> None:
    # refresh_margin 0 lets URLs die in the queue; the file host then answers 200 + JSON.
    config = sim_config(
        sessions=6, jwt_lifetime=1.0, quirk_expired_jwt_200=True, fault_slow=0.2, slow_seconds=0.2
    )
    async with Simulator(config) as sim:
        path = write_config(tmp_path, sim, downloads="workers = 1\nrefresh_margin = 0")
        outcome = await asyncio.wait_for(daemon.run(load(path), once=True), 240)
        assert outcome.ok
        root = tmp_path / "archive"
        assert_attachments_complete(root, sim)
        for blob in (root / "blobs").rglob("*"):
            if blob.is_file():
                assert b'"code":401' not in blob.read_bytes()[:200].replace(b" ", b"")


async def test_truncated_reset_and_failing_downloads_are_retried(tmp_path: Path) -> None:
    config = sim_config(fault_truncate=0.1, fault_reset=0.05, fault_5xx=0.05)
    async with Simulator(config) as sim:
        path = write_config(tmp_path, sim)
        outcome = await asyncio.wait_for(daemon.run(load(path), once=True), 240)
        assert outcome.ok
        assert sum(sim.stats()["faults"].values()) > 0
        assert_attachments_complete(tmp_path / "archive", sim)
        assert verify_archive(tmp_path / "archive").ok


async def test_refused_hosts_end_as_attachment_failed_lines(tmp_path: Path) -> None:
    # The simulator serves files from 127.0.0.1; an archiver that allows only zoom.us refuses
    # every one of them, records why, and still archives every message.
    async with Simulator(sim_config(sessions=6)) as sim:
        path = write_config(tmp_path, sim)
        text = path.read_text().replace(
            'allowed_hosts = ["127.0.0.1", "localhost"]', 'allowed_hosts = ["zoom.us", "*.zoom.us"]'
        )
        path.write_text(text)
        outcome = await daemon.run(load(path), once=True)
        assert outcome.ok and outcome.attachments == 0
        root = tmp_path / "archive"
        assert_matches_truth(root, sim)
        failed = [line for line in manifest_lines(root) if line["kind"] == "attachment_failed"]
        assert len(failed) == len(expected_attachments(sim))
        assert {line["reason"] for line in failed} == {
            "host '127.0.0.1' is not in downloads.allowed_hosts"
        }
        assert not any((root / "blobs").rglob("*.*"))


async def _run_measured(path: Path) -> tuple[int, int, str]:
    """Run `run --once` in a fresh wrapper process; returns (exit code, peak RSS KiB, stderr)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'archiver', 'run', '--config', sys.argv[1],"
        " '--once'])\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        wrapper,
        str(path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 600)
    text = stderr.decode()
    return proc.returncode or 0, int(text.strip().splitlines()[-1]), text


async def test_large_attachments_stream_with_flat_memory(tmp_path: Path) -> None:
    # Thousands of small attachments plus two of 500 MB: the archiver's peak RSS stays far
    # below the size of what it downloads.
    config = sim_config(
        sessions=60,
        attachment_probability=0.7,
        large_attachments=2,
        large_attachment_bytes=500 * MiB,
    )
    async with Simulator(config) as sim:
        path = write_config(tmp_path, sim, downloads=f"max_bytes = {600 * MiB}\nworkers = 4")
        code, peak_kib, stderr = await _run_measured(path)
        assert code == 0, stderr[-2000:]
        counts = assert_attachments_complete(tmp_path / "archive", sim)
        sizes = sorted(item["size"] for item in sim.ground_truth() if item["kind"] == "attachment")
        assert sizes[-1] >= 500 * MiB and counts["attachments"] >= 1000
        print(
            f"peak RSS {peak_kib / 1024:.0f} MiB for {counts['attachments']} attachments, "
            f"{sum(sizes) / MiB:.0f} MiB in all"
        )
        assert peak_kib < 150 * 1024


async def test_sigkill_during_downloads_archives_every_attachment_once(tmp_path: Path) -> None:
    rng = random.Random(9)
    config = sim_config(
        sessions=15,
        attachment_probability=0.8,
        max_attachment_bytes=MiB,
        fault_slow=0.1,
        slow_seconds=0.1,
    )
    async with Simulator(config) as sim:
        path = write_config(tmp_path, sim, downloads="workers = 3")
        for _ in range(20):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "archiver",
                "run",
                "--config",
                str(path),
                "--once",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=dict(os.environ),
            )
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        code, _, stderr = await _run_measured(path)
        assert code == 0, stderr[-2000:]
        root = tmp_path / "archive"
        assert_matches_truth(root, sim)
        assert_attachments_complete(root, sim)
        report = verify_archive(root)
        assert report.ok, json.dumps([str(p) for p in report.problems])
