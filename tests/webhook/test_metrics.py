"""The receiver's counters reach Prometheus: archived, known and refused requests."""

from __future__ import annotations

from pathlib import Path

from tests.webhook.conftest import free_port, running_daemon, sign


async def test_webhook_outcomes_are_scraped(tmp_path: Path) -> None:
    port = free_port()
    async with running_daemon(tmp_path, metrics_listen=f"127.0.0.1:{port}") as harness:
        sim = harness.sim
        (message,) = sim.add_messages(1, session_id=sim.session_ids[0])
        body = sim.webhook_event(sim.session_ids[0], message["message_id"])
        assert (await harness.post(body, sign(body)))[0] == 200
        forged = sign(body).copy()
        forged["x-zm-signature"] = "v0=" + "0" * 64
        assert (await harness.post(body, forged))[0] == 401
        async with harness.http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    assert 'zsa_webhook_requests_total{outcome="archived"} 1.0' in text
    refused = [line for line in text.splitlines() if line.startswith("zsa_webhook_refused_total")]
    assert refused and sum(float(line.rsplit(" ", 1)[1]) for line in refused) == 1.0
