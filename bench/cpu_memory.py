"""Rows 5 and 7: the archiver's CPU per message and its peak memory as the account grows.

CPU and peak RSS are the kernel's rusage of the archiver process alone (`os.wait4`), so the
simulator, on the same machine, is not counted; its own CPU during the run is reported beside,
to show it was not the bottleneck. Rate limits are off on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping

from bench.account import archived_attachments, archived_messages, read_account
from bench.context import GIB, Context
from bench.harness import TOML_VALUE, BenchError, Simulator, Usage, run_once, write_config
from bench.report import Figure, Goal, Row, figure

# Zoom's ceiling for a backfill: Business+ Medium, 20 sync calls/s x 250 messages.
ZOOM_MAX_MESSAGES_PER_SECOND = 20 * 250
MB = 1e6


def _bytes(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / MB:g} MB"


def cpu_flags(ctx: Context) -> dict[str, TOML_VALUE]:
    """The simulator's account for row 5: full pages, no attachments."""
    return {
        "seed": ctx.seed,
        "sessions": ctx.sizes.cpu_sessions,
        "mean_messages": ctx.sizes.cpu_mean_messages,
        "max_messages": int(ctx.sizes.cpu_mean_messages * 10),
        "busy_fraction": 0.0,
        "attachment_probability": 0.0,
    }


def backfill(ctx: Context, sim: Simulator, name: str, total: int) -> tuple[Usage, float]:
    """One `run --once` into a fresh archive, checked complete: its usage and the
    simulator's load (cores) meanwhile."""
    folder = ctx.folder(name)
    config = write_config(folder, sim.info)
    sim_cpu = sim.cpu()
    usage = run_once(config, ctx.log(name), ctx.sizes.timeout)
    sim_load = (sim.cpu() - sim_cpu) / usage.wall
    archived = archived_messages(folder / "archive")
    ctx.discard(folder)
    if archived != total:
        raise BenchError(f"archived {archived} of {total} messages")
    return usage, sim_load


def cpu_per_message(ctx: Context) -> Row:
    sizes = ctx.sizes
    rates, cores, walls, rss, sim_load = [], [], [], [], []
    with Simulator(cpu_flags(ctx), ctx.log("row5-simulator")) as sim:
        total = read_account(sim).total_messages
        for n in range(sizes.runs):
            usage, load = backfill(ctx, sim, f"row5-run{n}", total)
            sim_load.append(load)
            rates.append(total / usage.cpu)
            cores.append(ZOOM_MAX_MESSAGES_PER_SECOND * usage.cpu / total)
            walls.append(total / usage.wall)
            rss.append(usage.max_rss / MB)
        startup = sim.startup
    ctx.shared["row5_rss"] = rss
    ctx.shared["row5_messages"] = [float(total)]
    return Row(
        "5",
        "CPU per message",
        [
            figure("messages per archiver CPU-second", rates, "msg/CPU-s", Goal(">=", 20_000)),
            figure(
                "archiver CPU at Zoom's max rate (5,000 msg/s)", cores, "cores", Goal("<", 0.25)
            ),
            figure("messages per wall-second", walls, "msg/s"),
            figure("archiver peak RSS", rss, "MB"),
            figure("simulator load during the run", sim_load, "cores"),
        ],
        [
            f"simulator: --seed {ctx.seed} --sessions {sizes.cpu_sessions} --mean-messages "
            f"{sizes.cpu_mean_messages:g} --max-messages {int(sizes.cpu_mean_messages * 10)} "
            f"--busy-fraction 0 --attachment-probability 0: {total:,} messages in mostly full "
            f"250-message pages (generated in {startup:.0f} s)",
            "archiver: rate_limits.plan = unlimited, run --once into a fresh archive; CPU = "
            "user + system of the archiver process (wait4 rusage)",
        ],
    )


def _peak_rss_backfill(
    ctx: Context, name: str, flags: Mapping[str, TOML_VALUE]
) -> tuple[list[float], int]:
    rss = []
    with Simulator(flags, ctx.log(f"{name}-simulator")) as sim:
        total = read_account(sim).total_messages
        for n in range(ctx.sizes.memory_runs):
            folder = ctx.folder(f"{name}-run{n}")
            config = write_config(folder, sim.info)
            usage = run_once(config, ctx.log(f"{name}-run{n}"), ctx.sizes.timeout)
            archived = archived_messages(folder / "archive")
            ctx.discard(folder)
            if archived != total:
                raise BenchError(f"archived {archived} of {total} messages")
            rss.append(usage.max_rss / MB)
    return rss, total


def _peak_rss_attachment(ctx: Context, size: int, run: int) -> float:
    flags = {
        "seed": ctx.seed,
        "sessions": 1,
        "mean_messages": 1,
        "attachment_probability": 0.01,
        "max_attachment_bytes": 1024,
        "large_attachments": 1,
        "large_attachment_bytes": size,
    }
    name = f"row7-attachment-{size}-run{run}"
    with Simulator(flags, ctx.log(f"{name}-simulator")) as sim:
        account = read_account(sim)
        folder = ctx.folder(name)
        config = write_config(folder, sim.info, downloads={"max_bytes": 2 * size + GIB})
        usage = run_once(config, ctx.log(name), ctx.sizes.timeout)
        stored = archived_attachments(folder / "archive")
        ctx.discard(folder)
    largest = max((line.get("size", 0) for line in stored), default=0)
    if largest != size or any(line["kind"] != "attachment" for line in stored):
        raise BenchError(f"the {size}-byte attachment was not archived: {stored[:1]}")
    if len(stored) < len(account.attachments):
        raise BenchError(f"archived {len(stored)} of {len(account.attachments)} attachments")
    return usage.max_rss / MB


def memory(ctx: Context) -> Row:
    sizes = ctx.sizes
    figures: list[Figure] = []
    notes = []
    largest = max(sizes.memory_sessions)
    for sessions in sizes.memory_sessions:
        flags = {
            "seed": ctx.seed,
            "sessions": sessions,
            "mean_messages": sizes.memory_mean_messages,
            "busy_fraction": 0.0,
            "attachment_probability": 0.0,
        }
        rss, total = _peak_rss_backfill(ctx, f"row7-sessions-{sessions}", flags)
        goal = Goal("<=", 200) if sessions == largest else None
        figures.append(
            figure(f"peak RSS, {sessions:,} sessions, {total:,} messages", rss, "MB", goal)
        )
    if "row5_rss" in ctx.shared:
        messages = int(ctx.shared["row5_messages"][0])
        figures.append(
            figure(f"peak RSS, {messages:,} messages (row 5)", ctx.shared["row5_rss"], "MB")
        )
    small, big = min(sizes.memory_attachments), max(sizes.memory_attachments)
    pairs = []
    for n in range(sizes.memory_runs):
        pairs.append((_peak_rss_attachment(ctx, small, n), _peak_rss_attachment(ctx, big, n)))
    figures.append(figure(f"peak RSS, one {_bytes(small)} attachment", [p[0] for p in pairs], "MB"))
    figures.append(
        figure(
            f"peak RSS, one {_bytes(big)} attachment",
            [p[1] for p in pairs],
            "MB",
            Goal("<=", 200),
        )
    )
    figures.append(
        figure(
            "growth with the attachment",
            [b - s for s, b in pairs],
            "MB",
            Goal("<=", 10),
        )
    )
    notes.append(
        f"sessions: simulator --seed {ctx.seed} --sessions N --mean-messages "
        f"{sizes.memory_mean_messages:g} --busy-fraction 0 --attachment-probability 0"
    )
    notes.append(
        "attachments: --sessions 1 --large-attachments 1 --large-attachment-bytes SIZE "
        "--max-attachment-bytes 1024 (a few tiny attachments besides); downloads.max_bytes "
        "raised above SIZE"
    )
    notes.append(
        f"peak RSS = ru_maxrss of the archiver process (wait4); {sizes.memory_runs} run(s) per "
        "point; 'flat' = the 2 GiB run's peak minus the 200 MB run's, pair by pair"
    )
    return Row("7", "memory", figures, notes)
