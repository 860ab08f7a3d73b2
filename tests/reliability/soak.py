"""The long soak: the daemon (not --once) against live traffic with faults, restarted often.

`run_soak` is shared by `python -m bench.soak` and the slow-marked test. For `minutes`, the
simulator adds `live_rate` messages a second (some with attachments, some in new sessions)
and fails `faults` of all requests (5xx, resets, truncated bodies, slow answers, on the API
and the file host). Every `restart_every` seconds the daemon is stopped, by SIGKILL or SIGTERM
in turn, audited (`crash_audit`), and started again. At the end the traffic and faults stop,
one `run --once` catches up, and `final_audit` must find nothing lost, duplicated or corrupt.
The daemon's peak RSS is sampled along the way (invariant 7: memory stays flat).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the lock file; used lightly

from archiver.simulator import Simulator
from tests.reliability.audit import Truth, crash_audit, final_audit
from tests.reliability.harness import (
    RunVerdict,
    archiver_config,
    finish,
    launch,
    small_account,
    tail,
)


@dataclass
class SoakReport(RunVerdict):
    seconds: float = 0.0
    restarts_kill: int = 0
    restarts_term: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    rss_peaks_mib: list[float] = field(default_factory=list)  # per daemon process

    def table(self) -> str:
        final = self.final
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        peaks = self.rss_peaks_mib or [0.0]
        return "\n".join(
            [
                f"soak {self.seconds / 60:.1f} min: {self.requests} requests; faults injected: "
                f"{faults} ({sum(self.faults.values())} in all)",
                f"restarts: {self.restarts_kill} by SIGKILL, {self.restarts_term} by SIGTERM; "
                f"peak RSS per process {min(peaks):.0f}..{max(peaks):.0f} MiB",
                f"archive: {final.messages_archived} messages, {final.attachments_archived} "
                f"attachments (failed {final.attachments_failed})",
                "| lost | duplicated | corrupt |",
                "|---|---|---|",
                f"| {final.lost} | {final.duplicated_lines} | {final.corrupt} |",
            ]
            + [f"bad exit: {text}" for text in self.bad_exits[:5]]
            + [f"audit after a stop: {text}" for text in self.crash_audit_failures[:5]]
            + ([f"final: {final.summary()}"] if not final.ok else [])
        )


async def _watch_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss / (1 << 20))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def run_soak(
    workdir: Path,
    *,
    minutes: float,
    faults: float = 0.10,
    live_rate: float = 2.0,
    restart_every: float = 90.0,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    report = SoakReport()
    rng = random.Random(seed)
    # The fault budget, split: mostly 5xx, then resets and truncated bodies, a few slow ones.
    mix = {
        "fault_5xx": faults * 0.5,
        "fault_reset": faults * 0.2,
        "fault_truncate": faults * 0.2,
        "fault_slow": faults * 0.1,
    }
    started = time.monotonic()
    deadline = started + minutes * 60
    async with Simulator(small_account(seed, live_rate=live_rate, **mix)) as sim:
        config = archiver_config(workdir, sim, sync="poll_interval = 2\nlookback = 30")
        root, log = workdir / "archive", workdir / "daemon.log"
        before = b""
        n = 0
        while time.monotonic() < deadline:
            proc = await launch(config, log)
            peak = [0.0]
            stop_watch = asyncio.Event()
            watcher = asyncio.create_task(_watch_rss(proc.pid, peak, stop_watch))
            left = max(deadline - time.monotonic(), 0.0)
            try:
                await asyncio.wait_for(
                    proc.wait(), min(rng.uniform(0.5, 1.5) * restart_every, left)
                )
            except TimeoutError:
                pass
            except BaseException:  # interrupted (Ctrl-C): leave no daemon behind
                proc.kill()
                await proc.wait()
                raise
            if proc.returncode is not None:
                report.bad_exits.append(f"daemon exited {proc.returncode}: {tail(log, 800)}")
            elif n % 2 == 0:
                proc.kill()
                report.restarts_kill += 1
            else:
                proc.send_signal(signal.SIGTERM)
                report.restarts_term += 1
            code = await finish(proc, 60.0)
            if code not in (0, -signal.SIGKILL):
                report.bad_exits.append(f"stop ended with {code}: {tail(log, 800)}")
            stop_watch.set()
            await watcher
            report.rss_peaks_mib.append(peak[0])
            audit, before = crash_audit(root, Truth.of(sim), before)
            if not audit.ok:
                report.crash_audit_failures.append(audit.summary())
            n += 1
            if progress is not None:
                elapsed = (time.monotonic() - started) / 60
                progress(f"{elapsed:.1f} min: {n} daemon runs, manifest {len(before)} bytes")
        stats = sim.stats()
        report.faults = dict(stats["faults"])
        report.requests = stats["requests_total"]
        sim.set_switches(live_rate=0.0, **dict.fromkeys(mix, 0.0))
        proc = await launch(config, log, "--once")
        report.final_exit = await finish(proc, 600.0)
        if report.final_exit != 0:
            report.bad_exits.append(f"final run exited {report.final_exit}: {tail(log)}")
        report.final = final_audit(root, Truth.of(sim), before)
    report.seconds = time.monotonic() - started
    return report
