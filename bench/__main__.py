"""`python -m bench`: run the rows, print one table (Markdown), optionally write JSON.

    .venv/bin/python -m bench                      # make bench: every row, default sizes
    .venv/bin/python -m bench --full               # the issue's full sizes (1M messages...)
    .venv/bin/python -m bench --rows 1,6 --runs 5  # some rows, more runs
    .venv/bin/python -m bench --smoke --json out.json   # tiny: what the test suite runs

Exit status: 0 when every row ran (goals missed are shown in the table, not failures: numbers
on a busy machine are noisy); 1 when a row failed to run; with `--check`, also 1 when a goal
is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench import budget, cpu_memory, downloads, freshness, idle
from bench.context import Context, context
from bench.harness import PROFILE_ENV
from bench.report import Row, as_json, machine, machine_line, render_notes, render_table

RowFunction = Callable[[Context], list[Row]]


def _one(function: Callable[[Context], Row]) -> RowFunction:
    return lambda ctx: [function(ctx)]


ROWS: Final[dict[str, tuple[str, RowFunction]]] = {
    "1": ("rate-budget utilisation", _one(budget.rate_budget)),
    "2": ("overload recovery", _one(budget.overload)),
    "3": ("requests per archived message", _one(budget.requests_per_message)),
    "4": ("idle cost", _one(idle.idle_cost)),
    "5": ("CPU per message", _one(cpu_memory.cpu_per_message)),
    "6": ("download throughput", _one(downloads.throughput)),
    "7": ("memory", _one(cpu_memory.memory)),
    "8": ("freshness", freshness.freshness),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the issue's full sizes (slow)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row numbers")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--workdir", type=Path, default=None, help="work here (default: tmp)")
    parser.add_argument("--keep", action="store_true", help="keep archives and logs")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run every archiver under cProfile (all threads), one .prof per run in DIR; "
        "the figures are then not valid",
    )
    args = parser.parse_args(argv)
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; known: {', '.join(ROWS)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def run_rows(ctx: Context, numbers: Sequence[str], progress: bool = True) -> list[Row]:
    rows: list[Row] = []
    for number in numbers:
        title, function = ROWS[number]
        started = time.monotonic()
        if progress:
            print(f"row {number}: {title} ...", file=sys.stderr, flush=True)
        try:
            produced = function(ctx)
        except Exception as exc:  # one failed row must not hide the others' numbers
            traceback.print_exc(file=sys.stderr)
            produced = [Row(number, title, error=f"{type(exc).__name__}: {exc}")]
        elapsed = time.monotonic() - started
        if len(produced) == 1:  # a function of several rows times each itself
            produced[0].notes.append(f"row took {elapsed:.0f} s")
        if progress:
            print(f"row {number}: done in {elapsed:.0f} s", file=sys.stderr, flush=True)
        rows.extend(produced)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        os.environ[PROFILE_ENV] = str(args.profile.resolve())
    preset = "full" if args.full else "smoke" if args.smoke else "default"
    info = machine()
    started = time.monotonic()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with context(preset, args.workdir, args.keep, args.runs) as ctx:
        rows = run_rows(ctx, args.rows.split(","))
        sizes = dataclasses.asdict(ctx.sizes)
    elapsed = time.monotonic() - started
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    print(f"## zoom-sms-archiver benchmarks ({preset} sizes), {when}")
    print()
    print(f"Machine: {machine_line(info)}.")
    print(f"Command: `{command.strip()}`; {elapsed / 60:.1f} min in all.")
    if args.profile is not None:
        print(
            f"PROFILED (cProfile slows the archiver: these figures are not valid): {args.profile}"
        )
    print()
    print(render_table(rows))
    print()
    print(render_notes(rows))
    if args.json is not None:
        meta = {
            "preset": preset,
            "date": when,
            "machine": info,
            "command": command,
            "seconds": elapsed,
            "sizes": sizes,
            "profiled": args.profile is not None,
        }
        args.json.write_text(json.dumps(as_json(rows, meta), indent=2, default=list))
    if any(row.error is not None for row in rows):
        return 1
    if args.check and any(row.ok is False for row in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
