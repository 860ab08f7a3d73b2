"""`restore`: a real run replicated into SeaweedFS, rebuilt into an empty folder by the CLI,
byte for byte; then the daemon on the restored ROOT adds no message line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.verify import verify_archive
from tests.helpers import load, manifest_lines, write_config
from tests.replica.rig import local_segments, replica_section, segments_from_bucket
from tests.replica.seaweed import SeaweedS3

PREFIX = "acme/"


async def cli(*args: str) -> tuple[int, str, str]:
    """The CLI in a subprocess, awaited (the simulator keeps serving on this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.whole_run
async def test_restore_rebuilds_the_archive_and_a_run_on_it_adds_no_message(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    sim_config = SimulatorConfig(seed=5, sessions=12, history_days=60, attachment_probability=0.3)
    async with Simulator(sim_config) as sim:
        extra = replica_section(s3, locked_bucket, tmp_path, chunk_max_bytes=65536)
        path = write_config(tmp_path, sim, extra=extra)
        assert (await daemon.run(load(path), once=True)).ok
        root = tmp_path / "archive"
        async with s3.client() as c:
            in_bucket = await segments_from_bucket(c, locked_bucket, PREFIX)

        # A non-empty folder is refused before anything is read.
        busy = tmp_path / "busy"
        busy.mkdir()
        (busy / "keep").write_text("mine")
        code, _, err = await cli("restore", "--config", str(path), "--to", str(busy))
        assert code == 2 and "not empty" in err and (busy / "keep").read_text() == "mine"

        target = tmp_path / "restored"
        code, out, err = await cli("restore", "--config", str(path), "--to", str(target))
        assert code == 0, out + err
        assert ": OK" in out  # verify's verdict on the restored ROOT
        assert local_segments(target) == in_bucket
        original = local_segments(root)
        for n, data in original.items():  # the original went on by its own stop line only
            assert data.startswith(in_bucket[n]) and data[len(in_bucket[n]) :].count(b"\n") <= 1
        report, before = verify_archive(target), verify_archive(root)
        assert report.ok and before.ok
        blobs = {p.name for p in (target / "blobs").rglob("*") if p.is_file()}
        assert blobs == {p.name for p in (root / "blobs").rglob("*") if p.is_file()}
        assert not (target / "state.sqlite3").exists()

        # --upto: a prefix, cut after a whole line inside a chunk.
        upto = report.last_seq // 2 + 1
        cut = tmp_path / "cut"
        code, out, err = await cli(
            "restore", "--config", str(path), "--to", str(cut), "--upto", str(upto)
        )
        lines = list(manifest_lines(cut))
        assert [line["seq"] for line in lines] == list(range(1, upto + 1))
        whole = b"".join(in_bucket[n] for n in sorted(in_bucket))
        assert (
            b"".join(local_segments(cut)[n] for n in sorted(local_segments(cut)))
            == (whole[: sum(len(x) for x in whole.splitlines(keepends=True)[:upto])])
        )
        assert code == (0 if verify_archive(cut).ok else 1), out + err

        # The daemon on the restored ROOT, same account: no message line is added.
        messages = sum(1 for line in manifest_lines(target) if line["kind"] == "message")
        again = write_config(tmp_path / "again", sim, root=target, extra=extra)
        outcome = await daemon.run(load(again), once=True)
        assert outcome.ok, outcome.summary()
        after = sum(1 for line in manifest_lines(target) if line["kind"] == "message")
        assert after == messages
        assert verify_archive(target).ok


def test_restore_refuses_a_wrong_secret_in_one_line(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    import subprocess

    sim = {
        "api_url": "http://127.0.0.1:9/v2",
        "oauth_url": "http://127.0.0.1:9/oauth/token",
        "account_id": "acc",
        "client_id": "cid",
        "client_secret": "zoom-secret",
    }
    extra = replica_section(s3, locked_bucket, tmp_path, secret="0" * 40)
    path = write_config(tmp_path, sim, extra=extra)
    target = tmp_path / "restored"
    done = subprocess.run(
        [sys.executable, "-m", "archiver", "restore", "--config", str(path), "--to", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "refused the credentials" in done.stderr and "Traceback" not in done.stderr
    assert "0" * 40 not in done.stderr and not target.exists()
