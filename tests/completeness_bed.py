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
    "short_isync_probability": 0.05,  # an ISync page short while new messages remain
    "html_404_probability": 0.05,
    "forbidden_probability": 0.05,
    "fault_5xx": 0.05,  # 500/502/503, JSON or a gateway's HTML (the API and the file host)
    "file_gateway_probability": 0.05,  # the file host's gateway: HTML 404/403/502, no code
    "token_expiry": 20.0,
}
# What the bed must have shown after a run (else a pass could be complete by luck).
SHOWN_FAULTS: Final = frozenset(
    {"short_page", "no_token", "html_404", "forbidden", "5xx", "file_gateway"}
)
BURSTS: Final = (5, 19, 20, 21, 45)  # below, at, just over `count` (20), and twice over
PASS_TIMEOUT: Final = 120.0  # two of them still end before pytest's 300 s
SHOW: Final = 5  # ids shown per problem


def bed_config(seed: int, **changes: Any) -> SimulatorConfig:
    """500 small sessions (five busy ones of 100..260 messages: up to 13 pages of 20), a few
    MMS with small files (the file host behind its own faults and gateway), no rate limits:
    every pass stays quick."""
    values: dict[str, Any] = {
        "seed": seed,
        "sessions": 500,
        "history_days": 45,
        "mean_messages": 6.0,
        "busy_fraction": 0.01,
        "max_messages": 260,
        "attachment_probability": 0.03,
        "max_attachment_bytes": 4096,
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
            # MMS by attachment_probability, as live traffic: the second pass downloads too
            added += len(sim.add_messages(size, session_id=session_id, attachments=None))
    return added


AttachmentKey = tuple[str, str, str]  # session_id, message_id, attachment_id


@dataclass
class Comparison:
    """Archive against truth, keyed by (session_id, message_id), and every attachment of an
    archived message by (session_id, message_id, attachment_id)."""

    expected: int = 0
    archived: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    duplicated: list[tuple[str, str]] = field(default_factory=list)  # same content twice
    different: list[tuple[str, str]] = field(default_factory=list)  # latest line is not the truth
    attachments_expected: int = 0
    attachments_archived: int = 0
    # No line at all (the pass must not have exited 0), or more than one line
    attachments_missing: list[AttachmentKey] = field(default_factory=list)
    attachments_twice: list[AttachmentKey] = field(default_factory=list)
    # attachment_failed: this bed's file host never gives evidence (it serves every file)
    attachments_failed: list[AttachmentKey] = field(default_factory=list)
    attachments_wrong: list[AttachmentKey] = field(default_factory=list)  # not the truth's hash
    first_failure: str = ""  # the reason of one attachment_failed line

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.extra
            or self.duplicated
            or self.different
            or self.attachments_missing
            or self.attachments_twice
            or self.attachments_failed
            or self.attachments_wrong
        )

    def summary(self) -> str:
        parts = [
            f"{self.archived} of {self.expected} messages archived, "
            f"{self.attachments_archived} of {self.attachments_expected} attachments"
        ]
        problems: tuple[tuple[str, list[tuple[str, ...]]], ...] = (
            ("missing", list(self.missing)),
            ("not in the truth", list(self.extra)),
            ("archived twice with the same content", list(self.duplicated)),
            ("archived with other content", list(self.different)),
            ("attachments without a line", list(self.attachments_missing)),
            ("attachments with more than one line", list(self.attachments_twice)),
            (
                f"attachments failed (e.g. {self.first_failure!r})",
                list(self.attachments_failed),
            ),
            ("attachments with other bytes", list(self.attachments_wrong)),
        )
        for name, keys in problems:
            if keys:
                sessions = Counter(key[0] for key in keys)
                first = ", ".join(sorted(sessions)[:SHOW])
                parts.append(f"{len(keys)} {name} in {len(sessions)} sessions (first: {first})")
        return "; ".join(parts)


def compare(root: Path, sim: Simulator) -> Comparison:
    truth = truth_messages(sim)
    digests: dict[tuple[str, str], list[str]] = {}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    ends: dict[AttachmentKey, list[dict[str, Any]]] = {}
    if (root / "manifest").is_dir():
        for line in manifest_lines(root):
            if line["kind"] == "message":
                key = (line["session_id"], line["message_id"])
                digests.setdefault(key, []).append(line["digest"])
                latest[key] = line["record"]
            elif line["kind"] in ("attachment", "attachment_failed"):
                end = (line["session_id"], line["message_id"], line["attachment_id"])
                ends.setdefault(end, []).append(line)
    result = Comparison(expected=len(truth), archived=len(set(latest) & set(truth)))
    result.missing = sorted(set(truth) - set(latest))
    result.extra = sorted(set(latest) - set(truth))
    result.duplicated = sorted(k for k, d in digests.items() if len(d) != len(set(d)))
    result.different = sorted(k for k in set(truth) & set(latest) if latest[k] != truth[k])
    # Every attachment of every archived message ends as a line (DESIGN invariant 1).
    hashes = {
        x["attachment_id"]: x["sha256"] for x in sim.ground_truth() if x["kind"] == "attachment"
    }
    wanted = {
        (session_id, message_id, att["id"]): hashes[att["id"]]
        for (session_id, message_id), record in latest.items()
        for att in record.get("attachments") or []
    }
    result.attachments_expected = len(wanted)
    for key, sha256 in sorted(wanted.items()):
        lines = ends.get(key, [])
        if not lines:
            result.attachments_missing.append(key)
        elif len(lines) > 1:
            result.attachments_twice.append(key)
        elif lines[0]["kind"] == "attachment_failed":
            result.attachments_failed.append(key)
            result.first_failure = result.first_failure or str(lines[0]["reason"])
        elif lines[0]["sha256"] != sha256 or not (root / lines[0]["blob"]).is_file():
            result.attachments_wrong.append(key)
        else:
            result.attachments_archived += 1
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
