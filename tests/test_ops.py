"""Operations: metrics and health endpoints, status, verify and demo as real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from tests.helpers import load, write_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sim_config(**changes: object) -> SimulatorConfig:
    base = SimulatorConfig(seed=3, sessions=15, history_days=200, attachment_probability=0.3)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def metric(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{prefix} not in metrics")


async def test_metrics_and_health_scraped_during_a_run(tmp_path: Path) -> None:
    port = free_port()
    async with Simulator(sim_config()) as sim:
        path = write_config(tmp_path, sim, metrics_listen=f"127.0.0.1:{port}")
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(load(path), once=False, stop=stop))
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(f"{base}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("never ready")
                async with http.get(f"{base}/healthz") as response:
                    assert response.status == 200
                await asyncio.sleep(1.5)
                async with http.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    body = await response.text()
        finally:
            stop.set()
            outcome = await asyncio.wait_for(runner, 60)
        assert metric(body, "zsa_messages_archived_total") == outcome.new_messages > 0
        assert metric(body, "zsa_manifest_seq") > 0
        assert metric(body, "zsa_api_requests_total", 'label="medium",status="200"') > 0
        assert "zsa_download_queue_depth" in body
        assert "zsa_last_successful_poll_timestamp_seconds" in body
        assert "zsa_budget_utilisation" not in body or "nan" not in body


async def test_readyz_is_503_before_the_archive_is_open(tmp_path: Path) -> None:
    from archiver.ops.metrics import Telemetry, start_server

    port = free_port()
    runner = await start_server(Telemetry(poll_interval=60), "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["reason"] == "archive not open"
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


async def test_status_reports_sessions_downloads_and_budget(tmp_path: Path) -> None:
    async with Simulator(sim_config()) as sim:
        path = write_config(tmp_path, sim, rate_limits='plan = "business"\nshare = 1.0')
        outcome = await daemon.run(load(path), once=True)
        assert outcome.ok
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        "status",
        "--config",
        str(path),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["sessions_total"] == 15
    assert report["sessions_backfilled"] == 15
    assert report["sessions_incomplete"] == 0
    for row in report["sessions"]:
        assert row["complete"] and row["synced"] and row["backfill"] == "confirmed start"
        assert row["complete_through"] is not None
    assert report["downloads"]["done"] == outcome.attachments
    assert report["manifest_seq"] > 0
    assert (report["signing_key"], report["checkpoint_seq"]) == (False, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        "status",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert "15 known, 15 backfilled, 0 gone upstream, 0 incomplete" in out.decode()
    assert "checkpoints: no signing key configured" in out.decode()


def test_status_before_first_run_says_so(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "api_url": "http://127.0.0.1:9/v2",
            "oauth_url": "http://127.0.0.1:9/oauth/token",
            "account_id": "a",
            "client_id": "c",
            "client_secret": "s",
        },
    )
    proc = cli("status", "--config", str(path))
    assert proc.returncode == 1
    assert "has not run on this archive root yet" in proc.stderr


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    proc = cli("verify", str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert "not an archive" in proc.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    proc = cli("demo", "--dir", str(tmp_path / "demo"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "archived" in proc.stdout
    root = tmp_path / "demo" / "archive"
    verify = cli("verify", str(root), "--json")
    assert verify.returncode == 0, verify.stdout
    report = json.loads(verify.stdout)
    assert report["ok"] is True
    assert report["messages"] > 1000
    assert report["attachments"] > 100


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_run_once_on_a_terminal_draws_progress_bars(tmp_path: Path) -> None:
    terminal = _Terminal()
    async with Simulator(sim_config(sessions=8, fault_slow=0.5, slow_seconds=0.3)) as sim:
        path = write_config(tmp_path, sim, sync="workers = 1")
        outcome = await daemon.run(load(path), once=True, progress_stream=terminal)
    assert outcome.ok
    screen = terminal.getvalue()
    for label in ("sessions", "messages", "attachments", "api"):
        assert label in screen
    assert "req/s" in screen
    # The bars end on the final numbers: every session done, every message counted.
    assert f"{outcome.new_messages}/?" in screen or str(outcome.new_messages) in screen
