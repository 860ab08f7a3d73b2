"""Invariant 5: no client secret, access token or JWT anywhere a person or a backup can read.

One full run with every fault that makes the daemon talk about URLs and tokens (5xx, resets,
truncated bodies on the API and the file host, error documents served as files, URLs that
expire within the run, access tokens revoked mid-run, 429s), logging at debug level. Then
everything it left is searched: each log line and traceback, the manifest, the state
database's bytes, `/metrics`, `status --json` and `verify --json`; and a run with a wrong
secret, whose error must not echo it. Secrets are found by what they are, not by a list kept
from the run: the client secret and its Basic form, the simulator's token shape, any JWT,
any `jwt=` value.

Also here, through the real command: the secret file permission check and systemd's
credential directory (tests/test_config.py covers the loader's rules one by one).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import socket
import sys
import urllib.request
from pathlib import Path

from archiver.simulator import Simulator
from tests.helpers import write_config
from tests.reliability.audit import Truth, final_audit
from tests.reliability.harness import (
    PROJECT,
    archiver_config,
    child_env,
    finish,
    launch,
    small_account,
    tail,
)

ACCESS_TOKEN = re.compile(r"sim\.[A-Za-z0-9_-]{20,}")  # the simulator's "sim." + 43 chars
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
JWT_PARAM = re.compile(r"jwt=(?!\[REDACTED\])[^&\s\"'\\]+")


def leaks(text: str, secret: str, client_id: str) -> list[str]:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    found = [name for name, value in (("client secret", secret), ("basic", basic)) if value in text]
    for name, pattern in (("access token", ACCESS_TOKEN), ("jwt", JWT), ("jwt=", JWT_PARAM)):
        found += [f"{name}: {m.group(0)[:24]}..." for m in pattern.finditer(text)]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_cli(*args: str) -> str:
    """The command's stdout and stderr (asynchronously: the simulator shares our loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=PROJECT,
        env=child_env(),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode(errors="replace")


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode())


async def scrape(url: str, proc: asyncio.subprocess.Process) -> str:
    """/metrics while the daemon runs (it closes the endpoint when it exits)."""
    while proc.returncode is None:
        try:
            text = await asyncio.to_thread(fetch_text, url)
        except OSError:
            text = ""
        if "zsa_" in text:
            return text
        await asyncio.sleep(0.05)
    return ""


async def test_a_faulty_run_leaks_no_secret_anywhere(tmp_path: Path) -> None:
    secret = "cs-" + secrets.token_hex(16)
    config = small_account(
        31,
        client_secret=secret,
        attachment_probability=0.5,
        fault_5xx=0.06,
        fault_reset=0.04,
        fault_truncate=0.04,
        quirk_expired_jwt_200=True,
        jwt_lifetime=400.0,  # inside refresh_margin (300 s) soon after issue: URLs refreshed
        rate_limits=True,
        plan="pro",
    )
    async with Simulator(config) as sim:
        port = free_port()
        path = archiver_config(
            tmp_path,
            sim,
            metrics_listen=f"127.0.0.1:{port}",
            rate_limits='plan = "business"\nshare = 1.0',
        )
        path.write_text(path.read_text().replace('level = "warning"', 'level = "debug"'))
        log = tmp_path / "daemon.log"
        proc = await launch(path, log, "--once")
        metrics = await scrape(f"http://127.0.0.1:{port}/metrics", proc)
        await asyncio.sleep(0.3)
        sim.revoke_tokens()  # mid-run: the 401s and the renewal are logged too
        assert await finish(proc, 180.0) == 0, tail(log)
        stats = sim.stats()
        # Half the pass again with expired file URLs served as 200 + JSON error bodies.
        sim.set_switches(jwt_lifetime=-5.0)
        sim.add_messages(4, attachments=2)
        proc = await launch(path, log, "--once")
        await finish(proc, 180.0)
        root = tmp_path / "archive"
        assert final_audit(root, Truth.of(sim)).lost_messages == 0
        # A wrong secret: refused, and the refusal must not echo what it was given.
        wrong = tmp_path / "wrong"
        info = {
            "api_url": sim.api_url,
            "oauth_url": sim.oauth_url,
            "account_id": sim.account_id,
            "client_id": sim.client_id,
            "client_secret": secret + "-wrong",
        }
        wrong_config = write_config(wrong, info)
        wrong_out = await run_cli("run", "--config", str(wrong_config), "--once")
    assert "refused the credentials" in wrong_out
    assert stats["unauthorized"] > 0 and stats["faults"] and stats["downloads"]["count"] > 0
    corpus = {
        "daemon log": log.read_text(errors="replace"),
        "manifest": "".join(p.read_text() for p in sorted((root / "manifest").glob("*.jsonl"))),
        "state": b"".join(p.read_bytes() for p in root.glob("state.sqlite3*")).decode("latin-1"),
        "metrics": metrics,
        "status": await run_cli("status", "--config", str(path), "--json"),
        "verify": await run_cli("verify", str(root), "--json"),
        "wrong secret": wrong_out,
    }
    assert corpus["metrics"], "the metrics endpoint was never reached"
    # The corpus is real: the log holds the faults' retries and the token renewals.
    assert "download_retry" in corpus["daemon log"] or "attachment_failed" in corpus["daemon log"]
    assert "token_renewed" in corpus["daemon log"]
    found = {name: leaks(text, secret, sim.client_id) for name, text in corpus.items()}
    assert not any(found.values()), found


async def test_secret_file_readable_by_others_is_refused_without_echoing_it(
    tmp_path: Path,
) -> None:
    async with Simulator(small_account(2, sessions=2)) as sim:
        path = archiver_config(tmp_path, sim)
        secret_file = tmp_path / "client_secret"
        secret_file.chmod(0o644)
        out = await run_cli("run", "--config", str(path), "--once")
    assert f"secret file {secret_file} is readable by group or others" in out
    assert f"chmod 600 {secret_file}" in out
    assert sim.client_secret not in out
    assert not (tmp_path / "archive").exists()  # refused before anything was opened


async def test_systemd_credential_directory_supplies_the_secret(tmp_path: Path) -> None:
    async with Simulator(small_account(3, sessions=2, attachment_probability=0.0)) as sim:
        path = archiver_config(tmp_path, sim)
        # As systemd's LoadCredential= leaves it: $CREDENTIALS_DIRECTORY/client_secret, 0400.
        text = "\n".join(
            line for line in path.read_text().splitlines() if "client_secret_file" not in line
        )
        path.write_text(text)
        (tmp_path / "client_secret").unlink()
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "client_secret").write_text(sim.client_secret + "\n")
        (credentials / "client_secret").chmod(0o400)
        env = child_env(CREDENTIALS_DIRECTORY=str(credentials))
        env.pop("ZOOM_CLIENT_SECRET", None)
        log = tmp_path / "log"
        proc = await launch(path, log, "--once", env=env)
        assert await finish(proc, 60.0) == 0, tail(log)
        assert sim.stats()["tokens_issued"] == 1
        # A credential file others can read is refused like any secret file.
        (credentials / "client_secret").chmod(0o444)
        proc = await launch(path, log, "--once", env=env)
        assert await finish(proc, 60.0) == 2
        assert "is readable by group or others" in tail(log)
        assert sim.client_secret not in log.read_text()
