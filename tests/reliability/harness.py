"""The crash harness: the real daemon as a subprocess, killed and restarted, then audited.

`run_crash_cycles` is shared by the default suite (50 short cycles) and by
`python -m bench.crash_harness` (thousands). Each cycle starts `run --once` against one
simulator with faults on and either SIGKILLs it at a random instant after it has begun
writing, or arms a named crash point (`ARCHIVER_CRASH_AT=<point>@<n>`, see
`archiver.store.crash`) and lets it die there. After every cycle the archive must pass
`crash_audit` (the invariants of any instant); the account keeps changing between cycles
(new messages with attachments, revoked tokens). At the end a clean run must complete it and
`final_audit` must find nothing lost, duplicated or corrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from archiver.simulator import Simulator, SimulatorConfig
from tests.helpers import write_config
from tests.reliability.audit import Audit, Truth, crash_audit, final_audit

PROJECT: Final = Path(__file__).resolve().parents[2]
CRASH_POINTS: Final = (
    "manifest_before_write",
    "manifest_mid_write",
    "manifest_before_fsync",
    "manifest_after_fsync",
    "blob_before_rename",
    "blob_after_rename",
    "token_before_save",
    "token_after_save",
)
FAULTS: Final = {"fault_5xx": 0.03, "fault_reset": 0.02, "fault_truncate": 0.02}
NO_FAULTS: Final = dict.fromkeys(FAULTS, 0.0)
START_TIMEOUT: Final = 30.0  # interpreter start and imports, on a busy machine
FINAL_TIMEOUT: Final = 180.0


def small_account(seed: int, **changes: Any) -> SimulatorConfig:
    """A small account with attachments: a whole pass takes about a second."""
    base = SimulatorConfig(
        seed=seed,
        sessions=10,
        history_days=60,
        mean_messages=10,
        busy_fraction=0.0,
        max_messages=60,
        attachment_probability=0.25,
        max_attachment_bytes=48 * 1024,
        slow_seconds=0.3,
        stall_seconds=1.0,
    )
    return dataclasses.replace(base, **changes)


def history_start(config: SimulatorConfig) -> str:
    """A `sync.history_start` just before the simulator's oldest message: fewer list calls."""
    first = datetime.now(UTC) - timedelta(days=config.history_days + 2)
    return first.date().isoformat()


def archiver_config(
    directory: Path, sim: Simulator, *, sync: str = "", downloads: str = "", **extra: Any
) -> Path:
    """`tests.helpers.write_config` with small pages and few workers: many pages per pass."""
    return write_config(
        directory,
        sim,
        sync=f'history_start = "{history_start(sim.config)}"\ncount = 5\nworkers = 3\n{sync}',
        downloads=f"workers = 3\n{downloads}",
        **extra,
    )


def child_env(crash_at: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ARCHIVER_CRASH_AT"}
    env["PYTHONPATH"] = str(PROJECT)  # the wrappers under tests/ must import from anywhere
    if crash_at:
        env["ARCHIVER_CRASH_AT"] = crash_at
    env.update(extra)
    return env


async def launch(
    config: Path,
    log: Path,
    *args: str,
    env: dict[str, str] | None = None,
    entry: Sequence[str] = ("-m", "archiver"),
) -> asyncio.subprocess.Process:
    """`python <entry> run --config CONFIG ARGS`, stdout and stderr appended to `log` (a pipe
    could fill up and stall the child while nobody reads it)."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *entry,
            "run",
            "--config",
            str(config),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env or child_env(),
            cwd=PROJECT,
        )


def oslayer(journal: Path, *options: str) -> tuple[str, ...]:
    """The `entry` for `launch` that runs the daemon under `tests/reliability/oslayer.py`."""
    return ("-m", "tests.reliability.oslayer", "--journal", str(journal), *options, "--")


def manifest_size(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "manifest").glob("*.jsonl"))


async def wait_writing(root: Path, proc: asyncio.subprocess.Process, before: int) -> bool:
    """Wait until the child has appended to the manifest (its `start` event): a kill before
    that only exercises the interpreter's start-up. False if it exited first."""
    deadline = time.monotonic() + START_TIMEOUT
    while proc.returncode is None and time.monotonic() < deadline:
        if (root / "manifest").is_dir() and manifest_size(root) > before:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.01)
    return proc.returncode is None


async def finish(proc: asyncio.subprocess.Process, timeout: float) -> int:
    """The exit code, killing the child if it outlives `timeout`."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


@dataclass
class RunVerdict:
    """What every reliability run ends with; one `ok` for the crash cycles and the soak."""

    bad_exits: list[str] = field(default_factory=list)
    crash_audit_failures: list[str] = field(default_factory=list)
    final: Audit = field(default_factory=Audit)
    final_exit: int | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.bad_exits
            and not self.crash_audit_failures
            and self.final_exit == 0
            and self.final.ok
        )


@dataclass
class CycleReport(RunVerdict):
    cycles: int = 0
    random_kills: int = 0
    named_kills: Counter[str] = field(default_factory=Counter)
    named_not_reached: int = 0  # the run finished before the point's n-th arrival
    clean_exits: int = 0
    revocations: int = 0
    messages_added: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # injected by the simulator
    unauthorized: int = 0  # 401s answered (revoked tokens)
    seconds: float = 0.0

    @property
    def kills(self) -> int:
        return self.random_kills + sum(self.named_kills.values())

    def table(self) -> str:
        final = self.final
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        points = ", ".join(f"{k} {v}" for k, v in sorted(self.named_kills.items())) or "none"
        return "\n".join(
            [
                f"cycles {self.cycles} in {self.seconds:.0f} s: SIGKILL at random instants "
                f"{self.random_kills}, at named points {sum(self.named_kills.values())} "
                f"({points}); runs that finished first {self.clean_exits + self.named_not_reached}",
                f"faults injected: {faults}; 401s after {self.revocations} token revocations "
                f"{self.unauthorized}; messages added while crashing {self.messages_added}",
                f"archive: {final.messages_archived} messages, {final.attachments_archived} "
                f"attachments (failed {final.attachments_failed})",
                "| lost | duplicated | corrupt |",
                "|---|---|---|",
                f"| {final.lost} | {final.duplicated_lines} | {final.corrupt} |",
            ]
            + [f"bad exit: {text}" for text in self.bad_exits[:5]]
            + [f"audit after a crash: {text}" for text in self.crash_audit_failures[:5]]
            + ([f"final: {final.summary()}"] if not final.ok else [])
        )


async def _kill_or_wait(
    proc: asyncio.subprocess.Process,
    root: Path,
    size: int,
    crash_at: str | None,
    rng: random.Random,
    max_delay: float,
    sim: Simulator,
    report: CycleReport,
) -> int:
    """Kill at a random instant (no crash point), or wait for the point; the exit code."""
    if crash_at is None:
        if await wait_writing(root, proc, size):
            delay = rng.uniform(0.0, max_delay)
            if rng.random() < 0.3:  # mid-run: the daemon must renew on the 401
                await asyncio.sleep(delay / 2)
                sim.revoke_tokens()
                report.revocations += 1
                delay /= 2
            await asyncio.sleep(delay)
        if proc.returncode is None:
            proc.kill()
            report.random_kills += 1
    # A named point may never come (the pass ends first): then the run is just a run.
    return await finish(proc, 20.0 if crash_at else 5.0)


async def run_crash_cycles(
    workdir: Path,
    cycles: int,
    *,
    seed: int = 1,
    named_share: float = 0.5,
    max_delay: float = 0.8,
    progress: Callable[[int, CycleReport], None] | None = None,
) -> CycleReport:
    """Kill and restart the daemon `cycles` times, then complete and audit the archive."""
    rng = random.Random(seed)
    report = CycleReport()
    started = time.monotonic()
    async with Simulator(small_account(seed, quirk_overlap=True, **FAULTS)) as sim:
        config = archiver_config(workdir, sim)
        root = workdir / "archive"
        log = workdir / "daemon.log"
        before = b""
        named = 0
        for cycle in range(cycles):
            crash_at = None
            if rng.random() < named_share:
                # Every point in turn, each at a random arrival: deep in a run, not only first.
                point = CRASH_POINTS[named % len(CRASH_POINTS)]
                crash_at = f"{point}@{rng.randint(1, 12)}"
                named += 1
            size = manifest_size(root) if (root / "manifest").is_dir() else 0
            proc = await launch(config, log, "--once", env=child_env(crash_at))
            try:
                code = await _kill_or_wait(proc, root, size, crash_at, rng, max_delay, sim, report)
            finally:
                if proc.returncode is None:  # interrupted (Ctrl-C): leave no daemon behind
                    proc.kill()
                    await proc.wait()
            if code == -9 and crash_at is not None:
                report.named_kills[crash_at.partition("@")[0]] += 1
            elif code == 0:
                report.clean_exits += 1 if crash_at is None else 0
                report.named_not_reached += 1 if crash_at is not None else 0
            elif code != -9:
                report.bad_exits.append(f"cycle {cycle} exited {code}: {tail(log, 800)}")
            audit, before = crash_audit(root, Truth.of(sim), before)
            if not audit.ok:
                report.crash_audit_failures.append(f"cycle {cycle} ({crash_at}): {audit.summary()}")
            report.cycles += 1
            if rng.random() < 0.5:  # the account keeps changing between crashes
                added = sim.add_messages(
                    rng.randint(1, 8),
                    new_session=rng.random() < 0.2,
                    attachments=rng.choice((0, 1, 2, 3)),
                )
                report.messages_added += len(added)
            if progress is not None:
                progress(cycle, report)
        stats = sim.stats()
        report.faults = dict(stats["faults"])
        report.unauthorized = stats["unauthorized"]
        # The last run sees no faults, so every attachment can be had and the audit can
        # demand all of them (a failure during the cycles would show as attachment_failed).
        sim.set_switches(**NO_FAULTS)
        proc = await launch(config, log, "--once")
        report.final_exit = await finish(proc, FINAL_TIMEOUT)
        if report.final_exit != 0:
            report.bad_exits.append(f"final run exited {report.final_exit}: {tail(log)}")
        report.final = final_audit(root, Truth.of(sim), before)
    report.seconds = time.monotonic() - started
    return report
