"""Rows 1-3: the rate budget. How much of it a backfill uses, how it recovers from a budget
set too high, and how many calls a backfill spends per archived message.

All three back-fill the same kind of account: the simulator's default mix (mean 25 messages
per session, 10% busy sessions of 100..1000), seeded, without attachments. The simulator
counts every API call (and every 429) per label; the session list and sync endpoints are
both Medium, as Zoom's current spec has them, so one label carries the whole backfill.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from bench.account import Account, archived_messages, read_account
from bench.context import Context
from bench.harness import (
    Archiver,
    BenchError,
    Poller,
    Simulator,
    Usage,
    endpoint_requests,
    history_start,
    write_config,
)
from bench.report import Goal, Row, figure

BUSINESS_MEDIUM: Final = 20.0  # requests/s, Zoom Phone Business+ (zoom/README.md)
PRO_MEDIUM: Final = 10.0
OVERLOAD_SHARE: Final = 0.75  # Business+ x 0.75 = 15/s against Pro's 10/s: 50% too high
SAMPLE_EVERY: Final = 0.05


def _medium(stats: Mapping[str, Any]) -> int:
    return int(stats["by_label"].get("medium", {}).get("requests", 0))


def _medium_limited(stats: Mapping[str, Any]) -> int:
    return int(stats["by_label"].get("medium", {}).get("rate_limited", 0))


def _flags(ctx: Context, sessions: int, **extra: object) -> dict[str, Any]:
    # No attachments: downloads use the file host, not the API budget, and would only blur
    # the wall time of a backfill with their own.
    return {"seed": ctx.seed, "sessions": sessions, "attachment_probability": 0.0, **extra}


class _Backfill:
    """One measured `run --once` against a running simulator."""

    def __init__(self, ctx: Context, sim: Simulator, name: str, rate_limits: dict[str, Any]):
        folder = ctx.folder(name)
        config = write_config(folder, sim.info, rate_limits=rate_limits)
        poller = Poller(sim)
        before = poller.sample()
        sim_cpu = sim.cpu()
        archiver = Archiver(config, once=True, log=ctx.log(name)).start()
        try:
            self.usage: Usage = archiver.wait(ctx.sizes.timeout, poller.sample, SAMPLE_EVERY)
        finally:
            archiver.kill()
        self.sim_cpu = sim.cpu() - sim_cpu
        after = poller.samples[-1][1]
        self.requests = _medium(after) - _medium(before)
        self.limited = _medium_limited(after) - _medium_limited(before)
        self.list_calls = endpoint_requests(after, "list_sessions") - endpoint_requests(
            before, "list_sessions"
        )
        self.sync_calls = endpoint_requests(after, "sync") - endpoint_requests(before, "sync")
        first, last = poller.span(_medium)
        self.active = max(last - first, 1e-9)
        self.archived = archived_messages(folder / "archive")
        self.folder = folder


def _complete(ctx: Context, account: Account, run: _Backfill) -> None:
    """The backfill archived every message (the archive is kept for a look if not)."""
    if run.archived != account.total_messages:
        raise BenchError(
            f"archived {run.archived} messages of {account.total_messages}: incomplete "
            f"backfill; the archive stays in {run.folder}"
        )
    ctx.discard(run.folder)


def rate_budget(ctx: Context) -> Row:
    """Row 1: Business+ limits enforced exactly; the archiver configured for all of them."""
    sizes = ctx.sizes
    flags = _flags(ctx, sizes.budget_sessions, rate_limits=True, plan="business")
    utilisation, walls, limited, sim_load, cpu = [], [], [], [], []
    with Simulator(flags, ctx.log("row1-simulator")) as sim:
        account = read_account(sim)
        for n in range(sizes.runs):
            time.sleep(1.1)  # the simulator's one-second windows start empty
            run = _Backfill(ctx, sim, f"row1-run{n}", {"plan": "business", "share": 1.0})
            _complete(ctx, account, run)
            utilisation.append((run.requests - 1) / run.active / BUSINESS_MEDIUM)
            walls.append(run.usage.wall / (run.requests / BUSINESS_MEDIUM))
            limited.append(run.limited)
            sim_load.append(run.sim_cpu / run.usage.wall)
            cpu.append(run.usage.cpu)
    return Row(
        "1",
        "rate-budget utilisation",
        [
            figure("achieved / allowed rate", utilisation, "", Goal(">=", 0.97)),
            figure("429 answers", limited, "", Goal("==", 0)),
            figure("wall / (requests ÷ allowed)", walls, "", Goal("<=", 1.05)),
            figure("archiver CPU", cpu, "s"),
            figure("simulator load", sim_load, "cores"),
        ],
        [
            f"simulator: --seed {ctx.seed} --sessions {sizes.budget_sessions} "
            "--attachment-probability 0 --rate-limits --plan business "
            f"({account.total_messages:,} messages, {run.requests:,} requests: "
            f"{run.list_calls} list + {run.sync_calls} sync)",
            "archiver: rate_limits.plan = business, share = 1.0; run --once, fresh archive",
            "achieved rate: (requests - 1) / time from the first to the last Medium request, "
            f"sampled every {SAMPLE_EVERY * 1000:.0f} ms from /_sim/stats; wall: the archiver "
            "process from spawn to exit (start-up, OAuth and shutdown included)",
        ],
    )


def overload(ctx: Context) -> Row:
    """Row 2: the archiver believes in 15/s; the simulator enforces 10/s."""
    sizes = ctx.sizes
    flags = _flags(ctx, sizes.overload_sessions, rate_limits=True, plan="pro")
    shares, walls, completes = [], [], []
    with Simulator(flags, ctx.log("row2-simulator")) as sim:
        account = read_account(sim)
        for n in range(sizes.runs):
            time.sleep(1.1)
            run = _Backfill(ctx, sim, f"row2-run{n}", {"plan": "business", "share": OVERLOAD_SHARE})
            completes.append(run.archived / account.total_messages)
            ctx.discard(run.folder)
            shares.append(100.0 * run.limited / run.requests)
            walls.append(run.usage.wall / ((run.requests - run.limited) / PRO_MEDIUM))
    return Row(
        "2",
        "overload recovery",
        [
            figure("messages archived / in the account", completes, "", Goal("==", 1)),
            figure("429 answers / requests", shares, "%", Goal("<", 2.0)),
            figure("wall / (requests ÷ real limit)", walls, ""),
        ],
        [
            f"simulator: --seed {ctx.seed} --sessions {sizes.overload_sessions} "
            "--attachment-probability 0 --rate-limits --plan pro (Medium: 10/s); "
            f"{account.total_messages:,} messages, {run.requests - run.limited:,} requests "
            "answered 200",
            f"archiver: rate_limits.plan = business, share = {OVERLOAD_SHARE} (15/s: 50% above "
            "the real limit)",
        ],
    )


def requests_per_message(ctx: Context) -> Row:
    """Row 3: API calls of a full backfill against the minimum the account allows, plus one
    confirming call per session whose last page was short (a short page proves nothing)."""
    sizes = ctx.sizes
    ratios, bare, per_message = [], [], []
    with Simulator(_flags(ctx, sizes.requests_sessions), ctx.log("row3-simulator")) as sim:
        account = read_account(sim)
        lists = account.minimum_list_calls(history_start(400))
        minimum = account.minimum_sync_calls() + lists
        confirming = account.confirming_calls()
        for n in range(sizes.runs):
            run = _Backfill(ctx, sim, f"row3-run{n}", {"plan": "unlimited"})
            _complete(ctx, account, run)
            ratios.append(run.requests / (minimum + confirming))
            bare.append(run.requests / minimum)
            per_message.append(1000.0 * run.requests / account.total_messages)
    return Row(
        "3",
        "requests per archived message",
        [
            figure("API calls / (minimum + confirmations)", ratios, "", Goal("<=", 1.02)),
            figure("API calls / minimum (the price of evidence)", bare),
            figure("API calls per 1000 messages", per_message),
        ],
        [
            f"simulator: --seed {ctx.seed} --sessions {sizes.requests_sessions} "
            f"--attachment-probability 0 ({account.total_messages:,} messages); archiver: "
            "plan unlimited",
            f"minimum: {account.minimum_sync_calls():,} sync (⌈messages ÷ 250⌉ per session) + "
            f"{lists} list (one per month window from history_start, +1 per further 100 "
            f"sessions); confirmations: {confirming:,} (one empty BSync per session whose last "
            f"page was short); made: {run.sync_calls:,} sync + {run.list_calls} list",
        ],
    )
