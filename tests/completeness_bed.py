"""The completeness test bed: a Zoom with every behaviour its documentation allows switched on,
the real CLI against it as a subprocess, and an exact comparison of archive and truth.

Used by `tests/test_completeness_e2e.py` (issue 14). The comparison reports what is wrong in
numbers and names (missing, extra, duplicated, different content; the first few session ids),
so a failing pass says at once which rule of "a pass is complete or says why" it broke.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from archiver.simulator import Simulator, SimulatorConfig
from tests.helpers import manifest_lines, truth_messages, write_config
from tests.reliability.harness import (
    child_env,
    finish,
    history_start,
    launch,
    manifest_size,
    wait_writing,
)

# Every switch of "any Zoom the documentation allows" at once, at moderate odds.
ALL_SWITCHES: Final[dict[str, Any]] = {
    "quirk_overlap": True,  # the known boundary takes a slot of every ISync page with news
    "short_page_probability": 0.05,
    "no_token_probability": 0.05,
    "html_404_probability": 0.05,
    "forbidden_probability": 0.05,
    "fault_5xx": 0.05,  # 500/502/503, JSON or a gateway's HTML
    "token_expiry": 20.0,
}
BURSTS: Final = (5, 19, 20, 21, 45)  # below, at, just over `count` (20), and twice over
PASS_TIMEOUT: Final = 120.0  # two of them still end before pytest's 300 s
SHOW: Final = 5  # ids shown per problem


def bed_config(seed: int, **changes: Any) -> SimulatorConfig:
    """500 small sessions (five busy ones of 100..260 messages: up to 13 pages of 20), no
    attachments, no rate limits: every pass is about sync alone and stays quick."""
    values: dict[str, Any] = {
        "seed": seed,
        "sessions": 500,
        "history_days": 45,
        "mean_messages": 6.0,
        "busy_fraction": 0.01,
        "max_messages": 260,
        "attachment_probability": 0.0,
        **ALL_SWITCHES,
        **changes,
    }
    return SimulatorConfig(**values)


def archiver_config(directory: Path, sim: Simulator) -> Path:
    return write_config(
        directory,
        sim,
        sync=f'history_start = "{history_start(sim.config)}"\ncount = 20\nworkers = 8',
    )


def add_bursts(sim: Simulator, rng: random.Random, sizes: tuple[int, ...], sessions: int) -> int:
    """`sessions` distinct sessions per size get that many new messages; the total added."""
    chosen = rng.sample(sim.session_ids, sessions * len(sizes))
    added = 0
    for index, size in enumerate(sizes):
        for session_id in chosen[index * sessions : (index + 1) * sessions]:
            added += len(sim.add_messages(size, session_id=session_id))
    return added


@dataclass
class Comparison:
    """Archive against truth, keyed by (session_id, message_id)."""

    expected: int = 0
    archived: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    duplicated: list[tuple[str, str]] = field(default_factory=list)  # same content twice
    different: list[tuple[str, str]] = field(default_factory=list)  # latest line is not the truth

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicated or self.different)

    def summary(self) -> str:
        parts = [f"{self.archived} of {self.expected} messages archived"]
        for name, keys in (
            ("missing", self.missing),
            ("not in the truth", self.extra),
            ("archived twice with the same content", self.duplicated),
            ("archived with other content", self.different),
        ):
            if keys:
                sessions = Counter(session for session, _ in keys)
                first = ", ".join(sorted(sessions)[:SHOW])
                parts.append(f"{len(keys)} {name} in {len(sessions)} sessions (first: {first})")
        return "; ".join(parts)


def compare(root: Path, sim: Simulator) -> Comparison:
    truth = truth_messages(sim)
    digests: dict[tuple[str, str], list[str]] = {}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    if (root / "manifest").is_dir():
        for line in manifest_lines(root):
            if line["kind"] == "message":
                key = (line["session_id"], line["message_id"])
                digests.setdefault(key, []).append(line["digest"])
                latest[key] = line["record"]
    result = Comparison(expected=len(truth), archived=len(set(latest) & set(truth)))
    result.missing = sorted(set(truth) - set(latest))
    result.extra = sorted(set(latest) - set(truth))
    result.duplicated = sorted(k for k, d in digests.items() if len(d) != len(set(d)))
    result.different = sorted(k for k in set(truth) & set(latest) if latest[k] != truth[k])
    return result


@dataclass(frozen=True)
class Pass:
    exit_code: int
    comparison: Comparison
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.comparison.ok

    def report(self, name: str) -> str:
        verdict = "ok" if self.ok else "INCOMPLETE"
        text = f"{name}: exit {self.exit_code}, {self.comparison.summary()} [{verdict}]"
        return text if self.ok else f"{text}\n--- daemon log (tail) ---\n{self.log_tail}"


async def run_pass(config: Path, log: Path, root: Path, sim: Simulator) -> Pass:
    """One `run --once` to its end (killed after PASS_TIMEOUT), then the comparison."""
    mark = log.stat().st_size if log.exists() else 0
    proc = await launch(config, log, "--once", env=child_env())
    try:
        code = await finish(proc, PASS_TIMEOUT)
    finally:
        if proc.returncode is None:  # the test was interrupted: leave no daemon behind
            proc.kill()
            await proc.wait()
    return Pass(code, compare(root, sim), _logged_since(log, mark))


async def killed_pass(config: Path, log: Path, root: Path, delay: float) -> tuple[int, str]:
    """A `run --once` SIGKILLed `delay` seconds after it began writing, unless it ends first:
    its exit code (-9 when killed) and what it logged."""
    mark = log.stat().st_size if log.exists() else 0
    size = manifest_size(root) if (root / "manifest").is_dir() else 0
    proc = await launch(config, log, "--once", env=child_env())
    try:
        if await wait_writing(root, proc, size):
            try:
                await asyncio.wait_for(proc.wait(), delay)
            except TimeoutError:
                proc.kill()
        code = await finish(proc, PASS_TIMEOUT)
    finally:
        if proc.returncode is None:  # the test was interrupted: leave no daemon behind
            proc.kill()
            await proc.wait()
    return code, _logged_since(log, mark)


def _logged_since(log: Path, mark: int) -> str:
    text = log.read_bytes()[mark:].decode(errors="replace") if log.exists() else ""
    return text[-2000:]
