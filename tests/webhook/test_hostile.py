"""Hostile clients against the real daemon in a subprocess (issue 18).

The daemon runs with a lowered RLIMIT_NOFILE, so that a few hundred connections are what a
few thousand are under the unit's LimitNOFILE=4096. Every check is over loopback sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from archiver.simulator import Simulator
from tests.helpers import archived_messages, manifest_lines, truth_messages
from tests.webhook.conftest import accepts, free_port, sign, sim_config, wait_for, webhook_config

NOFILE = 256
HALF_OPEN = 500


@dataclass
class Daemon:
    sim: Simulator
    proc: asyncio.subprocess.Process
    root: Path
    webhook_url: str
    metrics_url: str
    stderr: Path  # stdout (the JSON log) and stderr

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1])

    def log_events(self, name: str) -> list[dict[str, object]]:
        found = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == name:
                    found.append(entry)
        return found


def _limit_descriptors() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))


@contextlib.asynccontextmanager
async def daemon_under_attack(tmp_path: Path, *, max_body: int = 65536) -> AsyncIterator[Daemon]:
    port, metrics_port = free_port(), free_port()
    async with Simulator(sim_config()) as sim:
        path = webhook_config(
            tmp_path,
            sim,
            port,
            sync="poll_interval = 3600",
            metrics_listen=f"127.0.0.1:{metrics_port}",
        )
        text = path.read_text().replace("max_body_bytes = 65536", f"max_body_bytes = {max_body}")
        path.write_text(text)
        stderr = tmp_path / "stderr.log"
        root = tmp_path / "archive"
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "archiver", "run", "--config", str(path),
                stdout=err, stderr=err, preexec_fn=_limit_descriptors,
            )  # fmt: skip
        waiter = asyncio.ensure_future(proc.wait())
        try:
            await wait_for(lambda: accepts(port) and accepts(metrics_port), 30, "ports", waiter)
            await wait_for(
                lambda: len(archived_messages(root)) >= len(truth_messages(sim)),
                30,
                "history archived",
                waiter,
            )
            yield Daemon(
                sim,
                proc,
                root,
                f"http://127.0.0.1:{port}/zoom/webhook",
                f"http://127.0.0.1:{metrics_port}/metrics",
                stderr,
            )
            assert proc.returncode is None, stderr.read_text()[-3000:]
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(waiter, 30)
        assert code == 0, stderr.read_text()[-3000:]


async def _half_open(port: int, first_line: bytes, n: int) -> list[asyncio.StreamWriter]:
    """`n` connections that send the start of a request and then nothing."""

    async def one() -> asyncio.StreamWriter | None:
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(first_line)
            await writer.drain()
            return writer
        except (OSError, TimeoutError):
            return None

    opened = await asyncio.gather(*(one() for _ in range(n)))
    return [w for w in opened if w is not None]


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/", maxsplit=1)[0])


async def test_half_open_connections_do_not_stop_events_scrapes_or_downloads(
    tmp_path: Path,
) -> None:
    async with daemon_under_attack(tmp_path) as d:
        held = await _half_open(
            _port(d.webhook_url), b"POST /zoom/webhook HTTP/1.1\r\nHost: x\r\n", HALF_OPEN
        )
        held += await _half_open(_port(d.metrics_url), b"GET /metrics HTTP/1.1\r\n", HALF_OPEN)
        try:
            (line,) = d.sim.add_messages(1, attachments=1)
            key = (line["session_id"], line["message_id"])
            body = d.sim.webhook_event(*key)
            timeout = aiohttp.ClientTimeout(total=15)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                async with http.post(d.webhook_url, data=body, headers=sign(body)) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["status"] == "archived"
                async with http.get(d.metrics_url) as response:
                    assert response.status == 200
                    scrape = await response.text()
            assert 'zsa_http_connections_shed_total{how="evicted",server="webhook"}' in scrape

            def attachment_archived() -> bool:
                return any(
                    entry["kind"] == "attachment" and entry["message_id"] == key[1]
                    for entry in manifest_lines(d.root)
                )

            await wait_for(attachment_archived, 30, "the event's attachment downloaded")
        finally:
            for writer in held:
                writer.close()
        # One line per burst at most, never a traceback per connection.
        assert len(d.log_events("http_connections_at_cap")) <= 25
        assert "Traceback" not in d.stderr.read_text(errors="replace")


async def test_unsigned_bodies_are_refused_unread_and_their_logs_bounded(tmp_path: Path) -> None:
    mib = 1 << 20
    async with daemon_under_attack(tmp_path, max_body=2 * mib) as d:
        before = d.rss_kib()
        port = _port(d.webhook_url)
        head = (
            b"POST /zoom/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % mib
        )
        payload = b"x" * (mib - 1)  # all but the last byte: a reader would wait for it

        async def flood() -> int:
            refused = 0
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 5
                )
            except (OSError, TimeoutError):
                return 0
            try:
                writer.write(head)
                with contextlib.suppress(OSError):
                    writer.write(payload)
                    await asyncio.wait_for(writer.drain(), 5)
                status = await asyncio.wait_for(reader.readline(), 5)
                refused = int(status.startswith(b"HTTP/1.1 401"))
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()
            return refused

        results = [await asyncio.gather(*(flood() for _ in range(10))) for _ in range(10)]
        refused = sum(sum(batch) for batch in results)
        after = d.rss_kib()
        assert refused >= 90, refused
        # 100 bodies of 1 MiB read into memory would add 100 MiB.
        assert after - before < 30 * 1024, (before, after)

        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                async with http.post(d.webhook_url, data=b"{}") as response:
                    assert response.status == 401
            async with http.get(d.metrics_url) as response:
                scrape = await response.text()
        logged = d.log_events("webhook_refused")
        assert 1 <= len(logged) <= 20, len(logged)
        assert 'zsa_webhook_refused_total{reason="missing_timestamp"} 400.0' in scrape, scrape
