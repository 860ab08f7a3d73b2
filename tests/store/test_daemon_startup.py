"""The daemon as an operator runs it (`run` in a subprocess): the start-up check comes before
anything is written to ROOT, and checkpoints are signed at a clean stop, or said to be off."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from archiver.simulator import Simulator, SimulatorConfig
from archiver.store import checkpoint
from archiver.store.manifest import canonical, record_digest
from tests.helpers import write_config

PROJECT = Path(__file__).resolve().parents[2]


def small() -> SimulatorConfig:
    return SimulatorConfig(
        seed=5, sessions=3, history_days=20, mean_messages=4, busy_fraction=0.0,
        attachment_probability=0.3, max_attachment_bytes=4096,
    )  # fmt: skip


def with_key(config: Path, root: Path, key: Path | None, interval: float = 300) -> None:
    text = config.read_text()
    extra = f'signing_key_file = "{key}"\n' if key else ""
    text = text.replace(
        f'root = "{root}"\n', f'root = "{root}"\n{extra}checkpoint_interval = {interval}\n'
    )
    config.write_text(text)


async def run(config: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver", "run", "--config", str(config), *args,
        cwd=PROJECT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT)},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def events(log: str) -> list[dict[str, Any]]:
    found = []
    for line in log.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "LOCK"  # taken before the check, so no other writer runs
    }


async def test_a_refused_start_writes_nothing_to_root(tmp_path: Path) -> None:
    async with Simulator(small()) as sim:
        config = write_config(tmp_path, sim)
        root = tmp_path / "archive"
        code, log = await run(config, "--once")
        assert code == 0, log[-2000:]
        last = sorted((root / "manifest").glob("*.jsonl"))[-1]
        lines = last.read_bytes().splitlines()
        index = max(i for i, raw in enumerate(lines) if b'"kind":"message"' in raw)
        edited = json.loads(lines[index])
        edited["record"]["message"] = "forged"
        edited["digest"] = record_digest(edited["record"])
        lines[index] = canonical(edited)
        last.write_bytes(b"".join(raw + b"\n" for raw in lines))
        (root / "tmp" / "partial-download").write_bytes(b"x")  # prepare_root would empty tmp/
        before = snapshot(root)
        code, log = await run(config, "--once")
    assert code == 1
    message = [line for line in log.splitlines() if line.startswith("zoom-sms-archiver:")]
    assert len(message) == 1, log
    assert f"manifest/{last.name}:{index + 2} (seq " in message[0]
    assert "verify" in message[0] and "restore" in message[0]
    assert snapshot(root) == before


async def test_checkpoints_at_a_clean_stop_and_in_the_journal(tmp_path: Path) -> None:
    key, pub = checkpoint.generate_keypair(tmp_path / "keys")
    async with Simulator(small()) as sim:
        config = write_config(tmp_path, sim)
        config.write_text(config.read_text().replace('level = "warning"', 'level = "info"'))
        root = tmp_path / "archive"
        with_key(config, root, key)
        code, log = await run(config, "--once")
    assert code == 0, log[-2000:]
    logged = [e for e in events(log) if e.get("event") == "checkpoint"]
    notes = checkpoint.list_checkpoints(root)
    assert notes, log[-2000:]
    seq, path = notes[-1]
    note = checkpoint.parse(path.read_bytes())
    assert checkpoint.verify(note, [checkpoint.load_public_key(pub.read_bytes())]) is None
    last = sorted((root / "manifest").glob("*.jsonl"))[-1].read_bytes().splitlines()[-1]
    assert json.loads(last)["event"] == "stop" and json.loads(last)["seq"] == seq == note.seq
    assert note.origin == f"zoom-sms-archiver/{sim.account_id}"
    # The journal holds the same head and signature: a second place the checkpoint lives.
    assert (logged[-1]["seq"], logged[-1]["head"]) == (note.seq, note.head)
    assert logged[-1]["signature"] == path.read_bytes().rstrip(b"\n").rsplit(b" ", 1)[1].decode()
    # ... and the whole note, so the journal's copy can be checked on its own
    assert logged[-1]["note"].encode() == path.read_bytes()
    assert (logged[-1]["origin"], logged[-1]["time"]) == (note.origin, note.time)
    assert not [e for e in events(log) if e.get("event") == "checkpoints_disabled"]
    status = subprocess.run(
        [sys.executable, "-m", "archiver", "status", "--config", str(config)],
        cwd=PROJECT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT)},
    )  # fmt: skip
    assert f"checkpoints: signing key configured; newest seq {seq} at {note.time}" in status.stdout


async def test_without_a_key_the_start_says_so(tmp_path: Path) -> None:
    async with Simulator(small()) as sim:
        config = write_config(tmp_path, sim)
        text = config.read_text().replace('level = "warning"', 'level = "info"')
        config.write_text(text)
        code, log = await run(config, "--once")
    assert code == 0, log[-2000:]
    disabled = [e for e in events(log) if e.get("event") == "checkpoints_disabled"]
    assert len(disabled) == 1 and "signing_key_file" in disabled[0]["reason"]
    assert not (tmp_path / "archive" / "checkpoints").exists()
