"""Run the archiver's command line under cProfile, in every thread, into one pstats file.

    .venv/bin/python -m bench.profiling OUT.prof run --config FILE --once
    .venv/bin/python -m pstats OUT.prof     # then: sort tottime, stats 30

py-spy and pyinstrument are not in the locked dev environment; cProfile is, and with every
thread profiled (the manifest writer, `asyncio.to_thread` workers) it shows where the CPU of a
run goes. The timer is each thread's own CPU clock (`time.thread_time`), so waiting (for the
GIL, the disk, the network) is not counted as cost. cProfile slows call-heavy code down, so
read shares, not absolute seconds.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from collections.abc import Callable

from archiver.cli import main as archiver_main


def profiled(argv: list[str], out: str) -> int:
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original: Callable[[threading.Thread], None] = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile(time.thread_time)
    main.enable()
    try:
        code = archiver_main(argv)
    finally:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign,assignment]
        stats = pstats.Stats(main)
        with lock:
            for profile in profiles:
                stats.add(profile)
        stats.dump_stats(out)
    return code


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(profiled(sys.argv[2:], sys.argv[1]))
