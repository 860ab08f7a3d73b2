"""Sizes of each row for the three presets, and the context every row runs in.

`default` is what `make bench` runs: chosen so the whole suite takes under 15 minutes on a
2-core machine. `full` uses the issue's sizes where the default uses less (1M messages for the
CPU row, three runs of every memory point); `smoke` is the tiny version the test suite runs
so the benchmarks cannot rot. BENCHMARKS.md lists what each preset measures.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

MIB: Final = 1 << 20
GIB: Final = 1 << 30


@dataclass(frozen=True)
class Sizes:
    runs: int = 3  # runs per timed figure (median, min, max)
    # rows 1-3: the simulator's default mix (mean 25 messages, 10% busy sessions up to 1000)
    budget_sessions: int = 650  # ~740 requests: ~37 s at Business+ Medium (20/s)
    overload_sessions: int = 200  # ~230 requests: ~23 s at Pro Medium (10/s), ~29 s in fact
    requests_sessions: int = 650
    # row 4
    idle_sessions: int = 10_000
    # poll_interval; lookback is 10x, as the defaults (60 s, 600 s). Not shorter: a session
    # synced within ~3 s of its last message is synced again at the next poll (a message of
    # the same second may have been missed), which a 2 s interval would make the rule.
    idle_poll: float = 5.0
    idle_polls: int = 3  # polls per measured group; `runs` groups
    # row 5: full 250-message pages, as a backfill at Zoom's rate would fetch them
    cpu_sessions: int = 200
    cpu_mean_messages: float = 1000.0
    # row 6
    download_files: int = 8
    download_file_bytes: int = 256 * MIB  # 8 x 256 MiB = 2 GiB
    download_parallel: int = 4
    # row 7
    memory_sessions: tuple[int, ...] = (1_000, 10_000, 100_000)
    memory_mean_messages: float = 1.0  # per session (the full preset: 10, i.e. 1M at 100k)
    memory_runs: int = 1
    memory_attachments: tuple[int, ...] = (200 * 1000 * 1000, 2 * GIB)
    # row 8
    fresh_sessions: int = 200
    fresh_rate: float = 4.0  # new messages per second
    fresh_poll: float = 5.0
    fresh_phase: float = 20.0  # seconds per measured phase; `runs` phases
    # everything
    timeout: float = 1800.0  # seconds one archiver process may take


PRESETS: Final = {
    "default": Sizes(),
    "full": Sizes(
        idle_poll=60.0,  # the default poll_interval: 11 warm-up polls + 3 x 3 polls, 20 min
        cpu_sessions=1000,  # ~1M messages
        memory_mean_messages=10.0,  # 100k sessions, 1M messages
        memory_runs=3,
    ),
    "smoke": Sizes(
        runs=1,
        budget_sessions=20,
        overload_sessions=10,
        requests_sessions=20,
        idle_sessions=300,
        idle_poll=0.3,
        idle_polls=3,
        cpu_sessions=4,
        cpu_mean_messages=300.0,
        download_files=2,
        download_file_bytes=4 * MIB,
        download_parallel=2,
        memory_sessions=(50, 200),
        memory_attachments=(2 * MIB, 8 * MIB),
        fresh_sessions=10,
        fresh_rate=10.0,
        fresh_poll=0.3,
        fresh_phase=2.0,
        timeout=120.0,
    ),
}


@dataclass(frozen=True)
class Context:
    """Where a row works and how big it runs. Rows make their folders under `workdir` and
    remove what they write (blobs are gigabytes) unless `keep` is set."""

    sizes: Sizes
    workdir: Path
    keep: bool = False
    seed: int = 1
    # Figures one row hands to another (row 5's peak RSS is row 7's 1M-message point).
    shared: dict[str, list[float]] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def discard(self, path: Path) -> None:
        if not self.keep:
            shutil.rmtree(path, ignore_errors=True)

    def log(self, name: str) -> Path:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"{name}.log"

    def with_runs(self, runs: int) -> Context:
        return dataclasses.replace(self, sizes=dataclasses.replace(self.sizes, runs=runs))


@contextmanager
def context(preset: str, workdir: Path | None, keep: bool, runs: int | None) -> Iterator[Context]:
    sizes = PRESETS[preset]
    if runs is not None:
        sizes = dataclasses.replace(sizes, runs=runs, memory_runs=runs)
    base = workdir or Path(tempfile.mkdtemp(prefix="zsa-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        yield Context(sizes, base, keep)
    finally:
        if not keep and workdir is None:
            shutil.rmtree(base, ignore_errors=True)
