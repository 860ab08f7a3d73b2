"""The long soak: live traffic with faults, the daemon restarted often, then the verdict.

    .venv/bin/python -m bench.soak --minutes 30 [--faults 0.10] [--live-rate 2]

Runs `tests/reliability/soak.py`: the daemon (not --once) archives live traffic while 10% of
all requests fail, and is stopped every ~90 s by SIGKILL or SIGTERM in turn and restarted.
Prints messages, attachments, restarts, faults and the lost / duplicated / corrupt table;
exit status 0 only when all three are zero and every run ended as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.reliability.soak import run_soak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--faults", type=float, default=0.10, help="share of requests failed")
    parser.add_argument("--live-rate", type=float, default=2.0, help="new messages per second")
    parser.add_argument("--restart-every", type=float, default=90.0, help="seconds, on average")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the archive even if it passed")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="zsa-soak-", dir=args.workdir))
    report = asyncio.run(
        run_soak(
            workdir,
            minutes=args.minutes,
            faults=args.faults,
            live_rate=args.live_rate,
            restart_every=args.restart_every,
            seed=args.seed,
            progress=lambda text: print(text, flush=True),
        )
    )
    print(report.table())
    print(f"archive and daemon log: {workdir}" if not report.ok or args.keep else "")
    if report.ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
