"""A metrics address the daemon cannot listen on is a configuration error (exit 2) naming the
key, before the archive opens (review of issue 13: the bind's OSError escaped as a traceback,
exit 1, which systemd restarts for ever)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_config

ZOOM = {
    "api_url": "http://127.0.0.1:9/v2",  # nothing is asked: the error comes first
    "oauth_url": "http://127.0.0.1:9/oauth/token",
    "account_id": "a",
    "client_id": "c",
    "client_secret": "s",
}


@pytest.mark.parametrize("case", ["in_use", "not_this_host"])
def test_metrics_listen_that_cannot_bind_exits_2_before_the_archive_opens(
    tmp_path: Path, case: str
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        listen = f"127.0.0.1:{held.getsockname()[1]}" if case == "in_use" else "192.0.2.1:9"
        path = write_config(tmp_path, ZOOM, metrics_listen=listen)
        proc = subprocess.run(
            [sys.executable, "-m", "archiver", "run", "--config", str(path), "--once"],
            capture_output=True,
            text=True,
            env={**os.environ},
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    assert f"metrics.listen: cannot listen on {listen}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "archive").exists()
