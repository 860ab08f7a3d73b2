"""Row 8b: freshness in webhook mode. Seconds from a message's creation to its durable line.

    .venv/bin/python -m bench --rows 8                       # with row 8a, in the suite's table
    .venv/bin/python -m bench.webhook_freshness --rate 20    # this row alone

Set-up as row 8a (`bench/freshness.py`), so the two rows compare: the account is backfilled
with limits off, then the simulator enforces Business+ limits and the daemon (the real `run`
command, its own process) runs with its defaults, `poll_interval` 60 s included, plus
`[webhook]`. The simulator runs in this process and posts its signed events as messages are
added at the row's rate (one message to a random session, a new session 5% of the time).

Creation: the wall clock just before `add_messages` (as 8a). Two arrivals per message:
- acknowledged: when the simulator's event got its 200. The receiver answers only once the
  line is fsynced, so this is creation-to-durable plus the answer's trip back; the goal
  (p99 under 2 s) is judged on it.
- line `at`: the manifest line's own timestamp, stamped as its group commit starts: 8a's
  measure, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import random
import socket
import sys
import time
from pathlib import Path
from typing import Final

from archiver.simulator import Simulator, SimulatorConfig
from archiver.simulator.webhooks import Delivery
from bench.context import Context, context
from bench.harness import Archiver, manifest_lines, parse_at, run_once, write_config
from bench.report import Goal, Row, figure, percentile, render_notes, render_table

GOAL_P99: Final = 2.0
SECRET: Final = "bench-webhook-secret-token"
NEW_SESSION_SHARE: Final = 0.05
DRAIN_TIMEOUT: Final = 60.0
LISTEN_TIMEOUT: Final = 60.0
# The daemon's start-up pass (discovery over the backfilled account) is not what this row
# measures; 8a likewise waits for its first poll.
SETTLE: Final = 3.0


@dataclasses.dataclass
class Phase:
    created: dict[str, float]  # message_id -> wall clock before it was added
    acked: dict[str, float]  # message_id -> wall clock of its event's 200 (every phase's)


def measure(ctx: Context) -> Row:
    """Row 8b (called by `bench.freshness`)."""
    sizes = ctx.sizes
    folder = ctx.folder("row8b")
    phases, arrived, validated = asyncio.run(_run(ctx, folder))
    ctx.discard(folder)
    p50, p99, worst, at_p99, lost = [], [], [], [], []
    for phase in phases:
        # An event never acknowledged counts as infinitely late, as in 8a.
        acked = [phase.acked.get(m, math.inf) - t for m, t in phase.created.items()]
        at = [arrived.get(m, math.inf) - t for m, t in phase.created.items()]
        p50.append(percentile(acked, 50))
        p99.append(percentile(acked, 99))
        worst.append(max(acked))
        at_p99.append(percentile(at, 99))
        lost.append(sum(1 for m in phase.created if m not in phase.acked))
    messages = sum(len(p.created) for p in phases)
    return Row(
        "8b",
        "freshness, webhook mode",
        [
            figure("p50 creation → acknowledged (durable)", p50, "s"),
            figure("p99 creation → acknowledged (durable)", p99, "s", Goal("<", GOAL_P99)),
            figure("max", worst, "s"),
            figure("p99 creation → line `at` (8a's measure)", at_p99, "s"),
            figure("events not acknowledged", lost, "", Goal("==", 0)),
        ],
        [
            f"simulator (in this process): --seed {ctx.seed} --sessions {sizes.fresh_sessions} "
            "--attachment-probability 0, then --rate-limits --plan business; "
            f"{sizes.fresh_rate:g} new messages/s for {sizes.runs} phases of "
            f"{sizes.fresh_phase:g} s ({messages} messages); URL validation "
            f"{'passed' if validated else 'FAILED'}",
            "archiver daemon: defaults (poll_interval 60, plan business, share 0.8) and "
            "[webhook] on loopback; each event's session gets a confirming ISync",
            "acknowledged = the simulator's event got its 200, which the receiver sends only "
            "after the line's fsync",
        ],
    )


async def _run(ctx: Context, folder: Path) -> tuple[list[Phase], dict[str, float], bool]:
    sizes = ctx.sizes
    config = SimulatorConfig(
        seed=ctx.seed,
        sessions=sizes.fresh_sessions,
        attachment_probability=0.0,
        webhook_secret=SECRET,
    )
    rng = random.Random(ctx.seed)
    acked: dict[str, float] = {}  # shared: an event may be answered after its phase ended

    def delivered(delivery: Delivery) -> None:
        acked.setdefault(delivery.message_id, time.time())

    async with Simulator(config) as sim:
        sim.webhooks.on_delivered = delivered
        info = {
            "api_url": sim.api_url,
            "oauth_url": sim.oauth_url,
            "account_id": sim.account_id,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        }
        backfill = write_config(folder, info)
        await asyncio.to_thread(run_once, backfill, ctx.log("row8b-backfill"), sizes.timeout)
        sim.set_switches(rate_limits=True, plan="business")
        port = _free_port()
        path = _with_webhook(write_config(folder, info, rate_limits={"plan": "business"}), port)
        daemon = Archiver(path, once=False, log=ctx.log("row8b-daemon")).start()
        phases: list[Phase] = []
        try:
            await _listening(port, daemon)
            sim.set_switches(webhook_url=f"http://127.0.0.1:{port}/zoom/webhook")
            validated = await sim.validate_webhook()
            await asyncio.sleep(SETTLE)
            for _ in range(sizes.runs):
                created = await _drive(sim, sizes.fresh_phase, sizes.fresh_rate, rng)
                phases.append(Phase(created, acked))
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await sim.drain_webhooks()
            await asyncio.to_thread(daemon.stop)
        finally:
            daemon.kill()
    arrived: dict[str, float] = {}
    for line in manifest_lines(folder / "archive"):
        if line["kind"] == "message":
            arrived.setdefault(line["message_id"], parse_at(line["at"]))
    return phases, arrived, validated


async def _drive(
    sim: Simulator, seconds: float, rate: float, rng: random.Random
) -> dict[str, float]:
    """Add messages at `rate`/s for `seconds`: message_id -> wall clock before its add."""
    created: dict[str, float] = {}
    next_at = time.monotonic()
    end = next_at + seconds
    while next_at < end:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += 1.0 / rate
        stamp = time.time()
        (line,) = sim.add_messages(1, new_session=rng.random() < NEW_SESSION_SHARE)
        created[line["message_id"]] = stamp
    return created


def _with_webhook(config: Path, port: int) -> Path:
    secret = config.parent / "webhook_secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    with config.open("a", encoding="utf-8") as fh:
        fh.write(
            f'[webhook]\nenabled = true\nlisten = "127.0.0.1:{port}"\n'
            f'secret_token_file = "{secret}"\n'
        )
    return config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _listening(port: int, daemon: Archiver) -> None:
    try:
        async with asyncio.timeout(LISTEN_TIMEOUT):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return
    except TimeoutError:
        raise RuntimeError(f"the daemon did not listen on {port}; see {daemon.log}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=4.0, help="new messages per second")
    parser.add_argument("--seconds", type=float, default=25.0, help="length of one phase")
    parser.add_argument("--runs", type=int, default=3, help="phases")
    parser.add_argument("--sessions", type=int, default=200, help="simulated sessions")
    args = parser.parse_args(argv)
    with context("default", None, False, args.runs) as ctx:
        sizes = dataclasses.replace(
            ctx.sizes,
            fresh_rate=args.rate,
            fresh_phase=args.seconds,
            fresh_sessions=args.sessions,
        )
        row = measure(dataclasses.replace(ctx, sizes=sizes))
    print(render_table([row]))
    print(render_notes([row]))
    return 0 if row.ok else 1


if __name__ == "__main__":
    sys.exit(main())
