"""Row 4: the idle cost. API calls per poll when 1% of 10,000 sessions had news since the last
poll, against the 10,000 calls of polling every session.

The account is backfilled first (`run --once`, limits off); then the daemon runs with a short
`poll_interval` P and `lookback` 10 P (the ratio of the defaults, 60 s and 600 s: the listing
each poll re-reads covers the last ~11 polls, as it would in production). In every P seconds
this driver gives 1% of the sessions, distinct and chosen at random, one new message each
(`POST /_sim/messages`), spread evenly over the interval. After a warm-up as long as the
lookback (so the listing has reached its steady size), the simulator's call counters are read
over groups of polls.

A session synced less than ~3 s after the second of its last message is synced again at the
next poll (the list gives times to the second: a message of that same second may have come
after the sync). That costs about 2.5 / P extra syncs per active session: 50% at P = 5 s,
4% at the default 60 s. The default P here is 5 s; `--full` runs P = 60 s."""

from __future__ import annotations

import random
import time

from bench.account import archived_messages, read_account
from bench.context import Context
from bench.harness import (
    Archiver,
    BenchError,
    Simulator,
    api_requests,
    endpoint_requests,
    run_once,
    write_config,
)
from bench.report import Goal, Row, figure

LOOKBACK_POLLS = 10
ACTIVE_SHARE = 0.01
QUIET_SECONDS = 2.0


def _interval(
    sim: Simulator, sessions: list[str], active: int, rng: random.Random, start: float, poll: float
) -> int:
    """One poll interval from `start`: `active` distinct sessions get a message each, spread
    evenly over it (news arrives at any moment, not in step with the archiver's polls)."""
    for n, session_id in enumerate(rng.sample(sessions, active)):
        time.sleep(max(0.0, start + n * poll / active - time.monotonic()))
        sim.add_messages(1, session_id=session_id)
    time.sleep(max(0.0, start + poll - time.monotonic()))
    return active


def idle_cost(ctx: Context) -> Row:
    sizes = ctx.sizes
    poll = sizes.idle_poll
    flags = {
        "seed": ctx.seed,
        "sessions": sizes.idle_sessions,
        "mean_messages": 2,
        "busy_fraction": 0.0,
        "attachment_probability": 0.0,
    }
    rng = random.Random(ctx.seed)
    ratios, per_poll, cpu_per_poll, lists, syncs = [], [], [], [], []
    with Simulator(flags, ctx.log("row4-simulator")) as sim:
        account = read_account(sim)
        sessions = sorted(account.messages)
        active = max(1, round(len(sessions) * ACTIVE_SHARE))
        folder = ctx.folder("row4")
        config = write_config(
            folder,
            sim.info,
            sync={"poll_interval": poll, "lookback": LOOKBACK_POLLS * poll},
        )
        backfill = run_once(config, ctx.log("row4-backfill"), sizes.timeout)
        daemon = Archiver(config, once=False, log=ctx.log("row4-daemon")).start()
        added = 0
        try:
            start = time.monotonic()
            for _ in range(LOOKBACK_POLLS + 1):  # warm-up: the listing grows to its size
                added += _interval(sim, sessions, active, rng, start, poll)
                start += poll
            for _ in range(sizes.runs):
                before, cpu = sim.stats(), daemon.cpu()
                for _ in range(sizes.idle_polls):
                    added += _interval(sim, sessions, active, rng, start, poll)
                    start += poll
                after = sim.stats()
                calls = (api_requests(after) - api_requests(before)) / sizes.idle_polls
                per_poll.append(calls)
                ratios.append(len(sessions) / calls)
                cpu_per_poll.append((daemon.cpu() - cpu) / sizes.idle_polls)
                lists.append(
                    (
                        endpoint_requests(after, "list_sessions")
                        - endpoint_requests(before, "list_sessions")
                    )
                    / sizes.idle_polls
                )
                syncs.append(
                    (endpoint_requests(after, "sync") - endpoint_requests(before, "sync"))
                    / sizes.idle_polls
                )
            time.sleep(poll + 1)  # the last news is archived
            cpu, quiet = daemon.cpu(), time.monotonic()
            time.sleep(max(2 * poll, QUIET_SECONDS))  # no news at all: what waiting costs
            idle_load = (daemon.cpu() - cpu) / (time.monotonic() - quiet)
            usage = daemon.stop()
        finally:
            daemon.kill()
        archived = archived_messages(folder / "archive")
        ctx.discard(folder)
    if archived != account.total_messages + added:
        raise BenchError(f"archived {archived} of {account.total_messages + added} messages")
    return Row(
        "4",
        "idle cost",
        [
            figure("one-call-per-session ÷ calls per poll", ratios, "x fewer", Goal(">=", 50)),
            figure("API calls per poll", per_poll),
            figure("  of which session list", lists),
            figure("  of which sync", syncs),
            figure("archiver CPU per poll", cpu_per_poll, "s"),
            figure("archiver CPU with no news at all", [1000 * idle_load], "ms per s"),
        ],
        [
            f"simulator: --seed {ctx.seed} --sessions {len(sessions):,} --mean-messages 2 "
            f"--busy-fraction 0 --attachment-probability 0; {active} distinct sessions get a "
            f"message in every {poll:g} s, spread evenly",
            f"archiver daemon: poll_interval = {poll:g}, lookback = {LOOKBACK_POLLS * poll:g}; "
            f"after a run --once backfill ({backfill.wall:.0f} s); {sizes.runs} groups of "
            f"{sizes.idle_polls} polls after {LOOKBACK_POLLS + 1} warm-up polls",
            f"daemon peak RSS {usage.max_rss / 1e6:.0f} MB over the backfilled account",
        ],
    )
