"""The crash harness at length: thousands of SIGKILLs of the real daemon, then the verdict.

    .venv/bin/python -m bench.crash_harness --cycles 1000 [--seed 1] [--epoch 250]

Each epoch is one simulator and one archive (`tests/reliability/harness.py`): the daemon is
started with faults on and killed at a random instant or at a named crash point, the archive
is audited after every kill, and a clean run must complete it. Epochs keep the per-cycle
audit cheap (it reads the whole archive). Prints the result table; exit status 0 only when
nothing was lost, duplicated or corrupt and every run ended as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tests.reliability.harness import CycleReport, run_crash_cycles


def merge(total: CycleReport, part: CycleReport) -> None:
    total.cycles += part.cycles
    total.random_kills += part.random_kills
    total.named_kills.update(part.named_kills)
    total.named_not_reached += part.named_not_reached
    total.clean_exits += part.clean_exits
    total.bad_exits += part.bad_exits
    total.revocations += part.revocations
    total.messages_added += part.messages_added
    total.faults = dict(Counter(total.faults) + Counter(part.faults))
    total.unauthorized += part.unauthorized
    total.crash_audit_failures += part.crash_audit_failures
    for name in (
        "messages_expected",
        "messages_archived",
        "lost_messages",
        "duplicated_lines",
        "attachments_expected",
        "attachments_archived",
        "attachments_failed",
        "lost_attachments",
        "corrupt",
        "token_violations",
        "tmp_leftovers",
    ):
        setattr(total.final, name, getattr(total.final, name) + getattr(part.final, name))
    total.final.problems += part.final.problems
    total.final_exit = part.final_exit if total.final_exit in (None, 0) else total.final_exit


async def main_async(args: argparse.Namespace) -> CycleReport:
    total = CycleReport()
    started = time.monotonic()
    epoch = 0
    while total.cycles < args.cycles:
        cycles = min(args.epoch, args.cycles - total.cycles)
        workdir = Path(tempfile.mkdtemp(prefix="zsa-crash-", dir=args.workdir))
        part = await run_crash_cycles(
            workdir,
            cycles,
            seed=args.seed + epoch,
            max_delay=args.max_delay,
            progress=lambda n, r: (
                print(f"  cycle {n + 1}: {r.kills} kills", flush=True)
                if (n + 1) % 50 == 0
                else None
            ),
        )
        print(f"epoch {epoch} (seed {args.seed + epoch}, {workdir}):\n{part.table()}", flush=True)
        merge(total, part)
        if part.ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        epoch += 1
    total.seconds = time.monotonic() - started
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash_harness", description=__doc__)
    parser.add_argument("--cycles", type=int, default=1000, help="kills in all (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first epoch")
    parser.add_argument("--epoch", type=int, default=250, help="cycles per archive")
    parser.add_argument("--max-delay", type=float, default=0.8, help="latest random kill, s")
    parser.add_argument("--workdir", default=None, help="where epochs' archives go")
    parser.add_argument("--keep", action="store_true", help="keep archives that passed")
    args = parser.parse_args(argv)
    total = asyncio.run(main_async(args))
    print(f"\nall epochs:\n{total.table()}")
    return 0 if total.ok else 1


if __name__ == "__main__":
    sys.exit(main())
