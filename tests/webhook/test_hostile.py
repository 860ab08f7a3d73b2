"""Hostile clients against the real daemon in a subprocess (issue 18).

The daemon runs with a lowered RLIMIT_NOFILE, so that a few hundred connections are what a
few thousand are under the unit's LimitNOFILE=4096. Every check is over loopback sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from archiver.ops.serving import METRICS_LIMITS, WEBHOOK_LIMITS, connection_cap
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
            # The sample is there for every live guard (0.0 with nothing shed): its value
            # says the half-open connections were pushed out.
            evicted = 'zsa_http_connections_shed_total{how="evicted",server="webhook"} '
            (value,) = [x[len(evicted) :] for x in scrape.splitlines() if x.startswith(evicted)]
            assert float(value) > 0, scrape

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


def _stalled_reader(port: int, scrapes: int = 400) -> socket.socket | None:
    """Pipelines scrapes with a 1 KiB receive buffer and never reads the answers."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    try:
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * scrapes)
    except OSError:
        s.close()
        return None
    return s


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_readers_that_never_read_and_malformed_requests_cost_no_descriptors_or_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 077c09d the evicted slow readers kept their sockets (transport.close() waits for
    answers that never drain) and the daemon ran out of descriptors; each malformed request
    wrote a traceback. RLIMIT_NOFILE 64: caps of 1 (metrics) and 4 (webhook)."""
    nofile = 64
    monkeypatch.setattr(sys.modules[__name__], "NOFILE", nofile)
    caps = connection_cap(METRICS_LIMITS, nofile) + connection_cap(WEBHOOK_LIMITS, nofile)
    async with daemon_under_attack(tmp_path) as d:
        port = _port(d.metrics_url)
        base = _fds(d.proc.pid)
        held = []
        try:
            for _ in range(3 * caps):
                s = _stalled_reader(port)
                if s is not None:
                    held.append(s)
                await asyncio.sleep(0.3)  # the answers back up behind each
            daemon_fds = _fds(d.proc.pid)
            assert daemon_fds <= base + caps, (base, daemon_fds, caps)

            async def malformed() -> None:
                with contextlib.suppress(OSError, TimeoutError):
                    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                    w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
                    await asyncio.wait_for(r.read(), 5)
                    w.close()

            for _ in range(100):  # one at a time: the metrics cap is 1 here
                await malformed()

            (line,) = d.sim.add_messages(1, attachments=1)
            key = (line["session_id"], line["message_id"])
            body = d.sim.webhook_event(*key)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
                async with http.post(d.webhook_url, data=body, headers=sign(body)) as response:
                    assert response.status == 200, await response.text()
                async with http.get(d.metrics_url) as response:
                    assert response.status == 200
                    scrape = await response.text()

            def attachment_archived() -> bool:
                return any(
                    e["kind"] == "attachment" and e["message_id"] == key[1]
                    for e in manifest_lines(d.root)
                )

            await wait_for(attachment_archived, 30, "the event's attachment downloaded")
        finally:
            for s in held:
                s.close()
        malformed_line = 'zsa_http_bad_requests_total{kind="malformed",server="metrics"} '
        (value,) = [x.split()[-1] for x in scrape.splitlines() if x.startswith(malformed_line)]
        assert float(value) >= 90, scrape  # a few may meet the full cap, refused unread
        text = d.stderr.read_text(errors="replace")
        assert "Traceback" not in text and "Error handling request" not in text.replace(
            '"detail": "Error handling request', ""
        ), text[-3000:]
        assert len(d.log_events("http_malformed_request")) <= 5


async def test_forged_shape_headers_neither_buffer_bodies_nor_lock_zoom_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers of Zoom's shape need no secret (a fresh time, 64 hex digits): on 077c09d a cap
    of such requests, each sending all but the last byte of 1 MiB, raised RSS by ~320 MiB
    and every slot was "busy", so Zoom's real event was refused. The unit's LimitNOFILE."""
    mib = 1 << 20
    monkeypatch.setattr(sys.modules[__name__], "NOFILE", 4096)
    cap = connection_cap(WEBHOOK_LIMITS, 4096)
    async with daemon_under_attack(tmp_path, max_body=mib) as d:
        port = _port(d.webhook_url)
        before = d.rss_kib()
        head = (
            b"POST /zoom/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"x-zm-request-timestamp: %d\r\nx-zm-signature: v0=%s\r\n"
            b"Content-Length: %d\r\n\r\n" % (int(time.time()), b"0" * 64, mib)
        )
        body = b"x" * (mib - 1)  # all but the last byte: the reader waits for it

        async def hold() -> asyncio.StreamWriter | None:
            try:
                _r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                w.write(head + body)
                await asyncio.wait_for(w.drain(), 5)
                return w
            except (OSError, TimeoutError):
                return None

        held = [w for w in await asyncio.gather(*(hold() for _ in range(cap))) if w]
        try:
            await asyncio.sleep(1.0)
            during = d.rss_kib()
            (line,) = d.sim.add_messages(1)
            event = d.sim.webhook_event(line["session_id"], line["message_id"])
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                async with http.post(d.webhook_url, data=event, headers=sign(event)) as r:
                    assert r.status == 200, await r.text()
                # A stale time of the right shape is refused before its body is read.
                stale = {**sign(b"{}"), "x-zm-request-timestamp": str(int(time.time()) - 3600)}
                async with http.post(d.webhook_url, data=b"{}", headers=stale) as r:
                    assert r.status == 401
                    assert (await r.json())["status"] == "stale_timestamp"
        finally:
            for w in held:
                w.close()
        assert len(held) >= cap // 2, len(held)
        # Buffering the bodies holds len(held) x 1 MiB (~320 MiB on 077c09d); reading them in
        # 8 KiB steps held 14-19 MiB here (2 cores, alone and beside 4 busy processes) and
        # 37 MiB once in CI under the whole suite, where the allocator's and the kernel's
        # rounding differ. A quarter of the buffered size tells the two apart with room both ways.
        assert during - before < len(held) * mib // 4 // 1024, (before, during, len(held))
