"""`zoom-sms-archiver simulate` as a real process: JSON line, serving, SIGTERM -> exit 0."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import aiohttp
import pytest

from archiver.errors import ConfigError
from archiver.simulator.cli import add_arguments, config_from_args


async def start(*flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        "simulate",
        "--port",
        "0",
        "--file-port",
        "0",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_json_line_then_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    proc = await start("--json", "--sessions", "3", "--client-secret", "s3cret", "--rate-limits")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        info = json.loads(line)
        assert set(info) == {
            "api_url",
            "oauth_url",
            "file_url",
            "control_url",
            "account_id",
            "client_id",
            "client_secret",
        }
        assert info["client_secret"] == "s3cret" and info["api_url"].endswith("/v2")
        auth = aiohttp.encode_basic_auth(info["client_id"], info["client_secret"])
        params = {"grant_type": "account_credentials", "account_id": info["account_id"]}
        async with http.post(
            info["oauth_url"], params=params, headers={"Authorization": auth}
        ) as r:
            assert r.status == 200
            token = (await r.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{info['api_url']}/phone/sms/sessions", headers=headers) as r:
            assert r.status == 200
            assert r.headers["X-RateLimit-Category"] == "Medium"  # --rate-limits took effect
        async with http.get(f"{info['control_url']}/stats") as r:
            assert (await r.json())["tokens_issued"] == 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()


async def test_human_output_and_sigint() -> None:
    proc = await start("--sessions", "2")
    assert proc.stdout is not None
    lines = [await asyncio.wait_for(proc.stdout.readline(), 30) for _ in range(9)]
    text = b"".join(lines).decode()
    for key in ("api_url", "oauth_url", "file_url", "control_url", "client_secret", "sim-secret"):
        assert key in text
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0


async def test_bad_option_exits_2_naming_the_key() -> None:
    proc = await start("--plan", "free")
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"plan" in stderr and b"free" in stderr


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_every_knob_is_a_flag() -> None:
    config = config_from_args(
        parse(
            "--seed", "9", "--quirk-overlap", "--fault-5xx", "0.1", "--label", "sync=heavy",
            "--daily-cap", "7", "--token-expiry", "30", "--header-style", "iso",
            "--jwt-lifetime", "60", "--live-rate", "2.5", "--history-days", "90",
            "--max-attachment-bytes", "1000", "--large-attachments", "1",
        )
    )  # fmt: skip
    assert (config.seed, config.quirk_overlap, config.fault_5xx) == (9, True, 0.1)
    assert config.labels["sync"] == "heavy" and config.daily_cap == 7
    assert (config.token_expiry, config.header_style, config.jwt_lifetime) == (30.0, "iso", 60.0)
    assert (config.live_rate, config.history_days, config.max_attachment_bytes) == (2.5, 90.0, 1000)
    assert config_from_args(parse()) == config_from_args(parse("--seed", "1"))
    with pytest.raises(ConfigError):
        config_from_args(parse("--label", "sync"))


def test_completeness_switches_are_documented_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    for phrase in (
        "--short-page-probability NUM chance that a FSync/BSync page holds only 1..count-1",
        "--no-token-probability NUM chance that a non-empty sync page comes without",
        "--html-404-probability NUM answer 404 with a gateway's HTML page and no Zoom code",
        "--forbidden-probability NUM answer 403",
        "--token-expiry NUM sync tokens are refused (400, code 300) this many seconds after",
        "full ISync page may hold the already-known newest message",
        "a gateway's 502 page",
    ):
        assert phrase in text
    config = config_from_args(
        parse(
            "--short-page-probability", "0.05", "--no-token-probability", "0.04",
            "--html-404-probability", "0.03", "--forbidden-probability", "0.02",
        )
    )  # fmt: skip
    assert (
        config.short_page_probability,
        config.no_token_probability,
        config.html_404_probability,
        config.forbidden_probability,
    ) == (0.05, 0.04, 0.03, 0.02)
