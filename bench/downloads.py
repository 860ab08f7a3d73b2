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
from pathlib import Path
from typing import Any, Final

from bench.account import archived_attachments, read_account
from bench.context import GIB, Context
from bench.harness import (
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


def _curl(
    urls: list[tuple[str, int]], folder: Path, parallel: int, timeout: float
) -> tuple[Usage, float]:
    """curl's usage fetching every URL into `folder`, and the seconds to fsync its files."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder.parent / f"{folder.name}.curlrc"
    config.write_text(
        "".join(
            f'url = "{url}"\noutput = "{folder / f"file-{n}"}"\n' for n, (url, _) in enumerate(urls)
        )
    )
    config.chmod(0o600)  # the URLs carry JWTs
    usage, stderr = run_measured(
        [
            CURL,
            "--silent",
            "--show-error",
            "--fail",
            "--parallel",
            "--parallel-max",
            str(parallel),
            "--config",
            str(config),
        ],
        timeout=timeout,
    )
    if usage.returncode != 0:
        raise BenchError(f"curl failed ({usage.returncode}): {stderr[-300:]!r}")
    for n, (_, size) in enumerate(urls):
        got = (folder / f"file-{n}").stat().st_size
        if got != size:
            raise BenchError(f"curl fetched {got} bytes of {size}")
    started = time.perf_counter()
    for n in range(len(urls)):
        fd = os.open(folder / f"file-{n}", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    synced = time.perf_counter() - started
    config.unlink()
    return usage, synced


def _downloads(stats: Mapping[str, Any]) -> int:
    return int(stats["downloads"]["count"])


def throughput(ctx: Context) -> Row:
    sizes = ctx.sizes
    parallel = sizes.download_parallel
    flags = {
        "seed": ctx.seed,
        "sessions": 8,
        "mean_messages": 4,
        "busy_fraction": 0.0,
        "attachment_probability": 0.5,
        "max_attachment_bytes": 1024,
        "large_attachments": sizes.download_files,
        "large_attachment_bytes": sizes.download_file_bytes,
    }
    archiver_rates: list[float] = []
    curl_rates: list[float] = []
    ratios: list[float] = []
    synced_ratios: list[float] = []
    whole: list[float] = []
    cpu: list[float] = []
    curl_cpu: list[float] = []
    sim_load: list[float] = []
    with Simulator(flags, ctx.log("row6-simulator")) as sim:
        account = read_account(sim)
        large = sum(1 for s in account.attachments.values() if s == sizes.download_file_bytes)
        if large < sizes.download_files:
            raise BenchError(
                f"the account has {large} large attachments, not {sizes.download_files}"
            )
        urls = fresh_urls(sim.info, sorted(account.messages))
        total = sum(size for _, size in urls)
        for n in range(sizes.runs):
            # A: the archiver
            folder = ctx.folder(f"row6-archiver-{n}")
            config = write_config(
                folder,
                sim.info,
                downloads={"workers": parallel, "max_bytes": sizes.download_file_bytes + GIB},
            )
            poller = Poller(sim)
            before = poller.sample()
            sim_cpu = sim.cpu()
            archiver = Archiver(config, once=True, log=ctx.log(f"row6-archiver-{n}")).start()
            try:
                usage = archiver.wait(sizes.timeout, poller.sample, 0.05)
            finally:
                archiver.kill()
            ended = archiver.started + usage.wall
            first, _ = poller.span(_downloads)
            after = poller.samples[-1][1]
            sent = after["downloads"]["bytes"] - before["downloads"]["bytes"]
            stored = archived_attachments(folder / "archive")
            ctx.discard(folder)
            if sent != total or sum(int(line.get("size", -1)) for line in stored) != total:
                raise BenchError(f"the archiver fetched {sent} bytes, stored {len(stored)} files")
            archiver_rate = total / (ended - first)
            whole.append(total / usage.wall / MB)
            cpu.append(usage.cpu)
            sim_load.append((sim.cpu() - sim_cpu) / (ended - first))
            # B: curl, same URLs, same parallelism
            target = ctx.folder(f"row6-curl-{n}")
            curl, synced = _curl(urls, target / "files", parallel, sizes.timeout)
            ctx.discard(target)
            fetched = curl.wall
            curl_rate = total / fetched
            curl_cpu.append(curl.cpu)
            archiver_rates.append(archiver_rate / MB)
            curl_rates.append(curl_rate / MB)
            ratios.append(archiver_rate / curl_rate)
            synced_ratios.append(archiver_rate / (total / (fetched + synced)))
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
            figure("simulator load while downloading", sim_load, "cores"),
        ],
        [
            f"{len(urls)} files, {total / GIB:.2f} GiB: {sizes.download_files} x "
            f"{sizes.download_file_bytes / GIB:.2f} GiB and tiny ones; parallelism {parallel} "
            f"(downloads.workers; curl --parallel --parallel-max {parallel})",
            "alternating archiver, curl, archiver, curl... against one simulator; each run "
            "writes to a fresh folder, deleted afterwards",
        ],
    )
