"""Row 8: freshness. Seconds from a message's creation to its durable manifest line, under
live traffic at a steady rate; polling mode here, webhook mode in `bench.webhook_freshness`.

Creation time: this driver adds each message itself (`POST /_sim/messages`, one message to a
random session, a new session 5% of the time, as the simulator's own `live_rate` traffic
does) and notes the wall clock just before the request, with microsecond resolution: the
simulator stamps messages in whole seconds, too coarse here. Arrival: the manifest line's
`at`, stamped when its group commit starts (the fsync that makes it durable follows within
milliseconds). The account is backfilled first with limits off; then the simulator enforces
Business+ limits and the daemon runs with its default share (0.8) and `poll_interval` P.

Webhook mode: when `bench/webhook_freshness.py` exists, its `measure(ctx: Context) -> Row`
is called and its row is printed as 8b; until then 8b says it is not measured.
"""

from __future__ import annotations

import importlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, cast

from bench.account import read_account
from bench.context import Context
from bench.harness import (
    Archiver,
    Simulator,
    manifest_lines,
    parse_at,
    run_once,
    write_config,
)
from bench.report import Figure, Goal, Row, figure, percentile

WEBHOOK_MODULE: Final = "bench.webhook_freshness"
NEW_SESSION_SHARE: Final = 0.05


def freshness(ctx: Context) -> list[Row]:
    rows = []
    for measure in (polling, webhook):
        started = time.monotonic()
        row = measure(ctx)
        row.notes.append(f"row took {time.monotonic() - started:.0f} s")
        rows.append(row)
    return rows


def _drive(
    sim: Simulator, seconds: float, rate: float, rng: random.Random
) -> tuple[dict[str, float], list[float]]:
    """Add messages at `rate`/s for `seconds`; their creation times and the request times."""
    created: dict[str, float] = {}
    trips: list[float] = []
    next_at = time.monotonic()
    end = next_at + seconds
    while next_at < end:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += 1.0 / rate
        stamp, started = time.time(), time.perf_counter()
        (line,) = sim.add_messages(1, new_session=rng.random() < NEW_SESSION_SHARE)
        trips.append(time.perf_counter() - started)
        created[line["message_id"]] = stamp
    return created, trips


def _arrivals(root: Path) -> dict[str, float]:
    """message_id -> `at` of its first manifest line."""
    arrived: dict[str, float] = {}
    for line in manifest_lines(root):
        if line["kind"] == "message":
            arrived.setdefault(line["message_id"], parse_at(line["at"]))
    return arrived


def polling(ctx: Context) -> Row:
    sizes = ctx.sizes
    poll = sizes.fresh_poll
    flags = {"seed": ctx.seed, "sessions": sizes.fresh_sessions, "attachment_probability": 0.0}
    rng = random.Random(ctx.seed)
    phases: list[dict[str, float]] = []
    trips: list[float] = []
    with Simulator(flags, ctx.log("row8-simulator")) as sim:
        read_account(sim)
        folder = ctx.folder("row8")
        run_once(write_config(folder, sim.info), ctx.log("row8-backfill"), sizes.timeout)
        sim.switches(rate_limits=True, plan="business")
        config = write_config(
            folder,
            sim.info,
            sync={"poll_interval": poll, "lookback": 10 * poll},
            rate_limits={"plan": "business"},
        )
        daemon = Archiver(config, once=False, log=ctx.log("row8-daemon")).start()
        try:
            time.sleep(poll + 1)  # its first poll, over the backfilled account
            for _ in range(sizes.runs):
                created, round_trips = _drive(sim, sizes.fresh_phase, sizes.fresh_rate, rng)
                phases.append(created)
                trips += round_trips
            wanted = {m for created in phases for m in created}
            deadline = time.monotonic() + 2 * poll + 2
            arrived = _arrivals(folder / "archive")
            while not wanted <= arrived.keys() and time.monotonic() < deadline:
                time.sleep(0.2)  # the last messages reach the manifest, or are stale
                arrived = _arrivals(folder / "archive")
            daemon.stop()
        finally:
            daemon.kill()
        arrived = _arrivals(folder / "archive")
        ctx.discard(folder)
    p50, p99, worst, stale = [], [], [], []
    for created in phases:
        # A message not archived by the end counts as infinitely late: if more than 1% are,
        # p99 is infinite, which is what a reader of the archive would see.
        latencies = [arrived.get(m, math.inf) - t for m, t in created.items()]
        p50.append(percentile(latencies, 50))
        p99.append(percentile(latencies, 99))
        worst.append(max(latencies))
        stale.append(sum(1 for m in created if m not in arrived))
    return Row(
        "8a",
        "freshness, polling mode",
        [
            figure("p50 creation → durable line", p50, "s"),
            figure("p99 creation → durable line", p99, "s"),
            figure("max", worst, "s"),
            figure(f"not archived {2 * poll + 2:g} s after the last one", stale, "", Goal("==", 0)),
        ],
        [
            f"simulator: --seed {ctx.seed} --sessions {sizes.fresh_sessions} "
            "--attachment-probability 0, then --rate-limits --plan business; "
            f"{sizes.fresh_rate:g} new messages/s for {sizes.runs} phases of "
            f"{sizes.fresh_phase:g} s ({sum(len(p) for p in phases)} messages)",
            f"archiver daemon: poll_interval = {poll:g} (expect p50 ≈ P/2, p99 ≈ P plus the "
            f"work of a poll), lookback = {10 * poll:g}, plan business, share 0.8",
            f"creation = wall clock before POST /_sim/messages (round trip p50 "
            f"{percentile(trips, 50) * 1000:.1f} ms); arrival = the line's `at`",
        ],
    )


def webhook(ctx: Context) -> Row:
    """Row 8b, from `bench.webhook_freshness.measure` once that module exists."""
    try:
        module = importlib.import_module(WEBHOOK_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != WEBHOOK_MODULE:
            raise
        return Row(
            "8b",
            "freshness, webhook mode",
            [Figure("p50 / p99 creation → durable line", None, "s")],
            ["not measured yet: lands with bench/webhook_freshness.py (`measure(ctx) -> Row`)"],
        )
    measure = cast(Callable[[Context], Row], module.measure)
    return measure(ctx)
