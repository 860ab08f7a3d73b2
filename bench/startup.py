"""`python -m bench.startup`: what a daemon start costs on a big archive, against a baseline.

    .venv/bin/python -m bench.startup build /tmp/startup-1g --gb 1      # once: ~1 GB archive
    .venv/bin/python -m bench.startup time /tmp/startup-1g --pairs 3 --baseline 6d547f5

`build` writes an archive as a daemon leaves it after a clean stop: message lines of ~940
bytes in 64 MiB segments (the writer's own encoder, one Zoom-shaped record each), then the
writer itself opens it (rebuilding state.sqlite3 from the manifest, as after a lost state),
writes `start` and `stop` and records the clean stop. `time` runs, in fresh processes, the
working tree's `archiver/` and the baseline's (`git archive REV archiver`, as `bench.ab`
does) alternately, pair by pair, on that archive:

- `check`: `recovery.check_startup(ROOT)`, the read-only start-up check;
- `start`: what `daemon.open_archive` does before its `start` line: the check, `State.open`,
  `ManifestWriter.open` (given the check's result where the tree accepts it), `close`.

Each figure is measured inside the child (wall and CPU seconds of the call, not the
interpreter's start), and the ratio is baseline ÷ working tree of each pair. A `start` child
puts the clean-stop mark back before it exits, so every run sees the same archive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from archiver.store.layout import prepare_root
from archiver.store.manifest import ZERO_HASH, encode_line, line_hash, record_digest
from archiver.store.state import State
from archiver.store.stateview import META_CLEAN_STOP
from archiver.store.writer import ManifestWriter
from bench.ab import REPO, baseline_tree, running

SEGMENT_MAX: Final = 64 * 1024 * 1024
AT: Final = "2026-01-01T00:00:00.000000Z"

# Run by each child with PYTHONPATH at its tree; it imports nothing from bench/.
CHILD: Final = r"""
import asyncio, inspect, json, sys, time
from pathlib import Path
import archiver
from archiver.store.layout import prepare_root
from archiver.store.recovery import check_startup
from archiver.store.state import State
from archiver.store.stateview import META_CLEAN_STOP
from archiver.store.writer import ManifestWriter

root, what = Path(sys.argv[1]), sys.argv[2]

async def start():
    tail = check_startup(root)
    prepare_root(root)
    state = State.open(root)
    stop = state.get_meta(META_CLEAN_STOP)
    kwargs = {}
    if "checked" in inspect.signature(ManifestWriter.open).parameters:
        kwargs["checked"] = tail.checked
    writer = await ManifestWriter.open(root, state, **kwargs)
    await writer.close()
    if stop is not None:
        state.set_meta(META_CLEAN_STOP, stop)
    state.close()
    return tail

wall, cpu = time.perf_counter(), time.process_time()
tail = check_startup(root) if what == "check" else asyncio.run(start())
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "seq": tail.seq, "archiver": archiver.__file__}))
"""


def build(root: Path, target: int) -> dict[str, int]:
    if (root / "manifest").exists():
        raise SystemExit(f"{root} already holds an archive; give a new folder")
    prepare_root(root)
    seq, head, segment, size, total = 0, ZERO_HASH, 1, 0, 0
    out = (root / "manifest" / f"{segment:06d}.jsonl").open("wb")
    try:
        while total < target:
            seq += 1
            record = {
                "message_id": f"m{seq}",
                "date_time": "2024-03-01T10:00:00Z",
                "direction": "In",
                "message": "hello there, this is a fairly typical sms message text " * 8,
                "message_type": 1,
                "sender": {"phone_number": "+15550100", "display_name": "Alice"},
                "to_members": [{"phone_number": "+15550101"}],
            }
            entry = {
                "kind": "message",
                "session_id": f"s{seq % 50}",
                "message_id": f"m{seq}",
                "record": record,
                "digest": record_digest(record),
                "source": "sync",
            }
            line = encode_line(entry, seq, head, AT) + b"\n"
            head = line_hash(line[:-1])
            if size + len(line) > SEGMENT_MAX:
                out.close()
                segment, size = segment + 1, 0
                out = (root / "manifest" / f"{segment:06d}.jsonl").open("wb")
            out.write(line)
            size += len(line)
            total += len(line)
    finally:
        out.close()
    asyncio.run(_close_cleanly(root))
    return {"lines": seq, "bytes": total, "segments": segment}


async def _close_cleanly(root: Path) -> None:
    """The writer fills state.sqlite3 from the manifest, then a start and a clean stop."""

    state = State.open(root)
    try:
        writer = await ManifestWriter.open(root, state)
        await writer.append_event("start", version="bench")
        stop = await writer.append_event("stop")
        state.set_meta(META_CLEAN_STOP, str(stop))
        await writer.close()
    finally:
        state.close()


def child(tree: Path, root: Path, what: str) -> dict[str, Any]:
    with running(tree), tempfile.TemporaryDirectory() as cwd:  # cwd: no ./archiver in path
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(root), what],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"{what} under {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if not Path(result["archiver"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the child ran {result['archiver']}, not {tree}")
    return result


def time_pairs(root: Path, baseline: str, pairs: int, whats: Sequence[str]) -> str:
    size = sum(p.stat().st_size for p in (root / "manifest").glob("*.jsonl"))
    out = [f"archive {root}: {size / 1e9:.2f} GB; baseline {baseline}; {pairs} pairs"]
    with baseline_tree(baseline) as base:
        trees = {"baseline": base, "working tree": REPO}
        for what in whats:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for n in range(pairs):
                order = list(trees) if n % 2 == 0 else list(reversed(trees))
                for name in order:
                    runs[name].append(child(trees[name], root, what))
                print(
                    f"{what} pair {n + 1}: "
                    + ", ".join(
                        f"{k} {v[-1]['wall']:.1f} s wall, {v[-1]['cpu']:.1f} s CPU"
                        for k, v in runs.items()
                    ),
                    flush=True,
                )
            out.append(_summary(what, runs, size))
    return "\n".join(out)


def _summary(what: str, runs: dict[str, list[dict[str, Any]]], size: int) -> str:
    def spread(values: Sequence[float], unit: str = "") -> str:
        return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"

    lines = [f"{what}:"]
    for name, results in runs.items():
        walls = [r["wall"] for r in results]
        cpus = [r["cpu"] for r in results]
        lines.append(
            f"  {name}: wall {spread(walls, ' s')}, CPU {spread(cpus, ' s')}, "
            f"CPU per GB {statistics.median(cpus) / (size / 1e9):.2f} s"
        )
    base, work = runs["baseline"], runs["working tree"]
    for key in ("wall", "cpu"):
        ratios = [b[key] / w[key] for b, w in zip(base, work, strict=True)]
        lines.append(f"  baseline ÷ working tree, {key}, pair by pair: {spread(ratios, 'x')}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write a big archive that ends in a clean stop")
    make.add_argument("root", type=Path)
    make.add_argument("--gb", type=float, default=1.0, help="manifest size in GB (1e9 bytes)")
    timing = commands.add_parser("time", help="time the start-up against a baseline")
    timing.add_argument("root", type=Path)
    timing.add_argument("--pairs", type=int, default=3)
    timing.add_argument("--baseline", default="HEAD", help="git revision (default HEAD)")
    timing.add_argument("--what", choices=["check", "start", "both"], default="both")
    args = parser.parse_args(argv)
    if args.command == "build":
        began = time.monotonic()
        print(json.dumps(build(args.root, int(args.gb * 1e9))))
        print(f"built in {time.monotonic() - began:.0f} s")
    else:
        whats = ["check", "start"] if args.what == "both" else [args.what]
        print(time_pairs(args.root, args.baseline, args.pairs, whats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
