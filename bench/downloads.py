"""Row 6: download throughput. The archiver against `curl` fetching the same files with the
same parallelism from the simulator's file host, alternately (A, B, A, B...) in one session.

The account holds a few sessions whose attachments are all tiny except `download_files` large
ones (together 2 GiB by default). curl's URLs are the ones the sync endpoint hands out (fresh
JWTs), one per (message, attachment) as the archiver's ledger has them, written to a temporary
folder with `curl --parallel --parallel-max N`. The archiver is timed from the moment the file
host started its first download (the simulator's counters, sampled every 50 ms) to its exit:
its start-up and the sync of the small account are not download time; its blob fsyncs, the
manifest lines and its shutdown are. curl does not fsync; a second figure adds an fsync of
curl's files, the archiver's durability, to curl's time.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.account import archived_attachments, read_account
from bench.context import GIB, Context
from bench.harness import (
    TOML_VALUE,
    Archiver,
    BenchError,
    Poller,
    Simulator,
    Usage,
    run_measured,
    write_config,
)
from bench.report import Goal, Row, figure

CURL: Final = shutil.which("curl") or "/usr/bin/curl"
# aria2c, the other baseline, where installed (scripts/system-deps installs it).
ARIA2C: Final = shutil.which("aria2c")
MB: Final = 1e6


def _get_json(url: str, headers: Mapping[str, str], data: bytes | None = None) -> Any:
    request = urllib.request.Request(url, data=data, headers=dict(headers))
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def fresh_urls(info: Mapping[str, str], sessions: list[str]) -> list[tuple[str, int]]:
    """(download_url, size) per distinct attachment of each message, from the sync endpoint."""
    basic = base64.b64encode(f"{info['client_id']}:{info['client_secret']}".encode()).decode()
    query = urllib.parse.urlencode(
        {"grant_type": "account_credentials", "account_id": info["account_id"]}
    )
    token = _get_json(f"{info['oauth_url']}?{query}", {"Authorization": f"Basic {basic}"}, b"")[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}"}
    urls: list[tuple[str, int]] = []
    for session_id in sessions:
        params = {"sync_type": "FSync", "count": "250"}
        while True:
            page = _get_json(
                f"{info['api_url']}/phone/sms/sessions/{session_id}/sync?"
                + urllib.parse.urlencode(params),
                headers,
            )
            messages = page.get("sms_histories") or []
            for message in messages:
                seen: set[str] = set()
                for att in message.get("attachments") or []:
                    if att["id"] not in seen:
                        seen.add(att["id"])
                        urls.append((att["download_url"], int(att["size"])))
            if len(messages) < 250:
                break
            params = {"sync_type": "BSync", "count": "250", "sync_token": page["sync_token"]}
    return urls


def _listing(tool: str, urls: list[tuple[str, int]], folder: Path) -> tuple[Path, list[str]]:
    """The URL list file for `tool` and the arguments that read it (one file-N per URL)."""
    listing = folder.parent / f"{folder.name}.{tool}-urls"
    if tool == "curl":
        text = "".join(
            f'url = "{url}"\noutput = "{folder / f"file-{n}"}"\n' for n, (url, _) in enumerate(urls)
        )
        args = ["--silent", "--show-error", "--fail", "--config", str(listing)]
    else:  # aria2c: one connection per file, no preallocation, nothing but errors on stderr
        text = "".join(f"{url}\n  out=file-{n}\n" for n, (url, _) in enumerate(urls))
        args = ["--quiet", "--max-connection-per-server=1", "--file-allocation=none"]
        args += ["--allow-overwrite=true", "--auto-file-renaming=false"]
        args += ["--dir", str(folder), "--input-file", str(listing)]
    listing.write_text(text)
    listing.chmod(0o600)  # the URLs carry JWTs
    return listing, args


def fetch_with(
    tool: str, urls: list[tuple[str, int]], folder: Path, parallel: int, timeout: float
) -> tuple[Usage, float]:
    """`tool` (curl or aria2c) fetching every URL into `folder`, `parallel` at a time: its
    usage, and the seconds an fsync of its files takes afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    listing, args = _listing(tool, urls, folder)
    if tool == "curl":
        command = [CURL, "--parallel", "--parallel-max", str(parallel), *args]
    elif ARIA2C is not None:
        command = [ARIA2C, f"--max-concurrent-downloads={parallel}", *args]
    else:
        raise BenchError(f"{tool} is not installed")
    usage, stderr = run_measured(command, timeout=timeout)
    listing.unlink()
    if usage.returncode != 0:
        raise BenchError(f"{tool} failed ({usage.returncode}): {stderr[-300:]!r}")
    for n, (_, size) in enumerate(urls):
        got = (folder / f"file-{n}").stat().st_size
        if got != size:
            raise BenchError(f"{tool} fetched {got} bytes of {size}")
    started = time.perf_counter()
    for n in range(len(urls)):
        fd = os.open(folder / f"file-{n}", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return usage, time.perf_counter() - started


def _downloads(stats: Mapping[str, Any]) -> int:
    return int(stats["downloads"]["count"])


def account_flags(ctx: Context) -> dict[str, TOML_VALUE]:
    """The simulator's account for row 6: tiny attachments plus the large ones."""
    return {
        "seed": ctx.seed,
        "sessions": 8,
        "mean_messages": 4,
        "busy_fraction": 0.0,
        "attachment_probability": 0.5,
        "max_attachment_bytes": 1024,
        "large_attachments": ctx.sizes.download_files,
        "large_attachment_bytes": ctx.sizes.download_file_bytes,
    }


@dataclass(frozen=True)
class Download:
    """One archiver run over row 6's account."""

    rate: float  # bytes/s from the file host's first download to the archiver's exit
    usage: Usage
    sim_load: float  # simulator cores over the same span


def archiver_download(ctx: Context, sim: Simulator, name: str, total: int) -> Download:
    """`run --once` into a fresh archive; checks that every byte was fetched and stored."""
    sizes = ctx.sizes
    folder = ctx.folder(name)
    config = write_config(
        folder,
        sim.info,
        downloads={
            "workers": sizes.download_parallel,
            "max_bytes": sizes.download_file_bytes + GIB,
        },
    )
    poller = Poller(sim)
    before = poller.sample()
    sim_cpu = sim.cpu()
    archiver = Archiver(config, once=True, log=ctx.log(name)).start()
    try:
        usage = archiver.wait(sizes.timeout, poller.sample, 0.05)
    finally:
        archiver.kill()
    ended = archiver.started + usage.wall
    first, _ = poller.span(_downloads)
    sent = poller.samples[-1][1]["downloads"]["bytes"] - before["downloads"]["bytes"]
    stored = archived_attachments(folder / "archive")
    ctx.discard(folder)
    if sent != total or sum(int(line.get("size", -1)) for line in stored) != total:
        raise BenchError(f"the archiver fetched {sent} bytes, stored {len(stored)} files")
    return Download(total / (ended - first), usage, (sim.cpu() - sim_cpu) / (ended - first))


def account_urls(ctx: Context, sim: Simulator) -> list[tuple[str, int]]:
    """Fresh URLs of every attachment, after checking the account holds the large ones."""
    account = read_account(sim)
    size = ctx.sizes.download_file_bytes
    large = sum(1 for s in account.attachments.values() if s == size)
    if large < ctx.sizes.download_files:
        raise BenchError(
            f"the account has {large} large attachments, not {ctx.sizes.download_files}"
        )
    return fresh_urls(sim.info, sorted(account.messages))


def client_download(
    ctx: Context, sim: Simulator, name: str, tool: str = "curl"
) -> tuple[float, float, Usage]:
    """`tool` over fresh URLs of the same files: (bytes/s, bytes/s with an fsync, usage)."""
    urls = account_urls(ctx, sim)
    total = sum(size for _, size in urls)
    target = ctx.folder(name)
    try:
        parallel, timeout = ctx.sizes.download_parallel, ctx.sizes.timeout
        usage, synced = fetch_with(tool, urls, target / "files", parallel, timeout)
    finally:
        ctx.discard(target)
    return total / usage.wall, total / (usage.wall + synced), usage


def throughput(ctx: Context) -> Row:
    sizes = ctx.sizes
    parallel = sizes.download_parallel
    archiver_rates: list[float] = []
    curl_rates: list[float] = []
    ratios: list[float] = []
    synced_ratios: list[float] = []
    whole: list[float] = []
    cpu: list[float] = []
    curl_cpu: list[float] = []
    aria_rates: list[float] = []
    aria_cpu: list[float] = []
    aria_ratios: list[float] = []
    sim_load: list[float] = []
    with Simulator(account_flags(ctx), ctx.log("row6-simulator")) as sim:
        urls = account_urls(ctx, sim)
        total = sum(size for _, size in urls)
        for n in range(sizes.runs):
            # A: the archiver
            run = archiver_download(ctx, sim, f"row6-archiver-{n}", total)
            whole.append(total / run.usage.wall / MB)
            cpu.append(run.usage.cpu)
            sim_load.append(run.sim_load)
            # B: curl, same files (fresh URLs), same parallelism
            curl_rate, synced_rate, curl = client_download(ctx, sim, f"row6-curl-{n}")
            curl_cpu.append(curl.cpu)
            archiver_rates.append(run.rate / MB)
            curl_rates.append(curl_rate / MB)
            ratios.append(run.rate / curl_rate)
            synced_ratios.append(run.rate / synced_rate)
            if ARIA2C is not None:  # C: aria2c likewise
                aria_rate, _, aria = client_download(ctx, sim, f"row6-aria2c-{n}", "aria2c")
                aria_rates.append(aria_rate / MB)
                aria_cpu.append(aria.cpu)
                aria_ratios.append(run.rate / aria_rate)
    aria_figures = [
        figure("archiver ÷ aria2c (pair by pair)", aria_ratios, "", Goal(">=", 0.9)),
        figure("aria2c", aria_rates, "MB/s"),
        figure("aria2c CPU", aria_cpu, "s"),
    ]
    return Row(
        "6",
        "download throughput",
        [
            figure("archiver ÷ curl (pair by pair)", ratios, "", Goal(">=", 0.9)),
            figure("archiver ÷ (curl + fsync of its files)", synced_ratios),
            figure("archiver, download phase", archiver_rates, "MB/s"),
            figure("curl", curl_rates, "MB/s"),
            figure("archiver, whole process (start-up, sync, shutdown)", whole, "MB/s"),
            figure("archiver CPU", cpu, "s"),
            figure("curl CPU", curl_cpu, "s"),
            *(aria_figures if aria_rates else []),
            figure("simulator load while downloading", sim_load, "cores"),
        ],
        [
            f"{len(urls)} files, {total / GIB:.2f} GiB: {sizes.download_files} x "
            f"{sizes.download_file_bytes / GIB:.2f} GiB and tiny ones; parallelism {parallel} "
            f"(downloads.workers; curl --parallel --parallel-max {parallel}; aria2c "
            f"--max-concurrent-downloads={parallel} --max-connection-per-server=1 "
            "--file-allocation=none)",
            "alternating archiver, curl, aria2c, archiver, curl... against one simulator; each "
            "run writes to a fresh folder, deleted afterwards; curl and aria2c neither hash nor "
            "fsync, the archiver does both"
            + ("" if ARIA2C else "; aria2c is not installed (apt-get install aria2)"),
        ],
    )
