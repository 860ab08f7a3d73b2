"""`demo`: the simulator, `run --once` and `verify`, into a fresh folder, then a summary.

The simulator runs as its own process (as Zoom would be), the archiver in this one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from archiver.config import load_config
from archiver.daemon import run
from archiver.ops.logs import configure_logging
from archiver.store.verify import render_report, verify_archive

DEMO_SEED = 7
DEMO_SESSIONS = 60


def start_simulator() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "archiver",
            "simulate",
            "--port",
            "0",
            "--file-port",
            "0",
            "--json",
            "--seed",
            str(DEMO_SEED),
            "--sessions",
            str(DEMO_SESSIONS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError("the simulator exited before printing its addresses")
    return proc, json.loads(line)


def write_demo_config(folder: Path, info: dict[str, str]) -> Path:
    secret = folder / "client_secret"
    secret.write_text(info["client_secret"])
    secret.chmod(0o600)
    path = folder / "config.toml"
    path.write_text(
        f"""# Written by `zoom-sms-archiver demo` for the built-in simulator.
[zoom]
account_id = "{info["account_id"]}"
client_id = "{info["client_id"]}"
client_secret_file = "client_secret"
api_url = "{info["api_url"]}"
oauth_url = "{info["oauth_url"]}"

[archive]
root = "archive"

[sync]
history_start = "{time.strftime("%Y-%m-%d", time.gmtime(time.time() - 400 * 86400))}"

[rate_limits]
plan = "unlimited"

[downloads]
allowed_hosts = ["127.0.0.1", "localhost"]
allowed_schemes = ["http", "https"]
allow_private_addresses = true

[metrics]
listen = ""

[log]
level = "warning"
""",
        encoding="utf-8",
    )
    return path


def run_demo(folder: str | None) -> int:
    base = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="zoom-sms-archiver-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"demo folder: {base}")
    proc, info = start_simulator()
    try:
        print(f"simulator:   {info['api_url']} (seed {DEMO_SEED}, {DEMO_SESSIONS} sessions)")
        config = load_config(write_demo_config(base, info))
        configure_logging(config.log.level, config.log.format, stream=sys.stderr)
        started = time.monotonic()
        outcome = asyncio.run(run(config, once=True))
        elapsed = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    report = verify_archive(config.root)
    print(render_report(report))
    print()
    print(
        f"archived {outcome.new_messages} messages and {outcome.attachments} attachments "
        f"({outcome.attachments_failed} failed) with {outcome.requests} API requests "
        f"in {elapsed:.1f} s into {config.root}"
    )
    print(f"config:  {base / 'config.toml'}")
    print(f"check:   zoom-sms-archiver verify {config.root}")
    return 0 if outcome.ok and report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(os.environ.get("DEMO_DIR")))
