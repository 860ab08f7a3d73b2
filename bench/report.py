"""Results: a figure is the median, min and max of several runs; a row holds a few figures.

Pure: building, judging and rendering results, no processes. The table is Markdown, so the
printed output can be pasted into BENCHMARKS.md as it is; `as_json` is what the smoke test
and other tools read.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_SHOWN: Final = {">=": "≥", "<=": "≤", "<": "<", "==": "="}


@dataclass(frozen=True)
class Spread:
    """Median, min and max of `n` measurements."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        data = [float(v) for v in values]
        if not data:
            raise ValueError("a spread needs at least one value")
        return cls(statistics.median(data), min(data), max(data), len(data))


@dataclass(frozen=True)
class Goal:
    op: str  # ">=", "<=", "<" or "=="
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown goal operator {self.op!r}")

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{_SHOWN[self.op]} {_number(self.threshold)}"


@dataclass(frozen=True)
class Figure:
    """One measured quantity; judged on its median when it has a goal."""

    name: str
    spread: Spread | None
    unit: str = ""
    goal: Goal | None = None

    @property
    def ok(self) -> bool | None:
        if self.goal is None or self.spread is None:
            return None
        return self.goal.met(self.spread.median)


def figure(name: str, values: Sequence[float], unit: str = "", goal: Goal | None = None) -> Figure:
    return Figure(name, Spread.of(values) if values else None, unit, goal)


@dataclass
class Row:
    number: str  # "1" .. "8", or "8b": the row it answers
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool | None:
        """False if a goal is missed or the row failed; None if it has no goals."""
        if self.error is not None:
            return False
        verdicts = [f.ok for f in self.figures if f.ok is not None]
        return None if not verdicts else all(verdicts)


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if value == int(value):  # counts, and ratios that came out whole
        return f"{int(value):,}"
    if magnitude >= 10_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return "0" if value == 0 else f"{value:.3g}"


def render_table(rows: Sequence[Row]) -> str:
    lines = [
        "| # | what | figure | median | min | max | n | goal | met |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        first = True
        label = (row.number, row.title)
        if row.error is not None:
            lines.append(f"| {label[0]} | {label[1]} | **failed**: {row.error} | | | | | | ✗ |")
            continue
        for fig in row.figures or [Figure("(no figures)", None)]:
            number, title = label if first else ("", "")
            first = False
            name = f"{fig.name} ({fig.unit})" if fig.unit else fig.name
            if fig.spread is None:
                cells = ["n/a", "", "", ""]
            else:
                s = fig.spread
                cells = [_number(s.median), _number(s.low), _number(s.high), str(s.n)]
            verdict = {True: "✓", False: "✗ missed", None: ""}[fig.ok]
            goal = str(fig.goal) if fig.goal else ""
            lines.append(
                f"| {number} | {title} | {name} | {' | '.join(cells)} | {goal} | {verdict} |"
            )
    return "\n".join(lines)


def render_notes(rows: Sequence[Row]) -> str:
    out = []
    for row in rows:
        if row.notes:
            out.append(f"{row.number}. {row.title}:")
            out.extend(f"   - {note}" for note in row.notes)
    return "\n".join(out)


def machine() -> dict[str, str]:
    """What the numbers were measured on: CPU model, cores, memory, kernel, Python, load."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    reference = f"{reference_cpu() * 1000:.0f}"
    return {
        "reference": reference,
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load": load,
    }


def reference_cpu(records: int = 20_000) -> float:
    """CPU seconds of a fixed workload shaped like the archiver's hot path (canonical JSON and
    SHA-256 of message-like records), best of three: how fast this machine is right now. The
    CPU rows move with it; compare it between runs before comparing their figures."""
    record = {
        "message_id": "x" * 22,
        "date_time": "2026-01-01T00:00:00Z",
        "direction": "In",
        "message": "Hello, see you tomorrow at noon " * 3,
        "sender": {"phone_number": "12025550100", "display_name": "Ana Smith"},
        "to_members": [{"phone_number": "12025550101", "display_name": "Björn Müller"}],
    }
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        for n in range(records):
            text = json.dumps({**record, "n": n}, sort_keys=True, separators=(",", ":"))
            hashlib.sha256(text.encode()).hexdigest()
            json.loads(text)
        best = min(best, time.process_time() - started)
    return best


def machine_line(info: dict[str, str]) -> str:
    line = (
        f"{info['cpu']}, {info['cores']} cores, {info['memory']} RAM, {info['kernel']}, "
        f"Python {info['python']}; load average at start {info['load']}"
    )
    if "reference" in info:
        line += f"; reference workload {info['reference']} CPU-ms (lower = faster machine now)"
    return line


def as_json(rows: Sequence[Row], meta: dict[str, Any]) -> dict[str, Any]:
    def fig(f: Figure) -> dict[str, Any]:
        out: dict[str, Any] = {"name": f.name, "unit": f.unit, "ok": f.ok}
        if f.spread is None:
            out["median"] = None
        else:
            s = f.spread
            out.update(median=s.median, min=s.low, max=s.high, n=s.n)
        out["goal"] = str(f.goal) if f.goal else None
        return out

    return {
        **meta,
        "rows": [
            {
                "number": r.number,
                "title": r.title,
                "ok": r.ok,
                "error": r.error,
                "notes": r.notes,
                "figures": [fig(f) for f in r.figures],
            }
            for r in rows
        ],
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100): a value that was measured."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
