"""`python -m bench.ab`: the working tree against a baseline revision, pair by pair.

    .venv/bin/python -m bench.ab --row 5 --pairs 6                  # against HEAD
    .venv/bin/python -m bench.ab --row 6 --pairs 5 --baseline HEAD~3 --curl

How a change is judged on a shared, noisy machine: both versions of `archiver/` run against
one simulator in alternating order (A B, B A, A B...), and what counts is the ratio of each
pair, B ÷ A, not two medians taken at different moments. The baseline is `git archive REV
archiver` unpacked into a temporary folder; each child runs with `PYTHONPATH` set to its tree
(checked before the first run). Row 5 compares messages per archiver CPU-second, row 6 the
download rate (bytes from the first download to exit); `--curl` adds a curl run to every row-6
pair, as `python -m bench` does. The simulator is the working tree's. Both trees run in this
venv: a baseline that imports a package it lacks fails to start (revisions before `188cc5b`
need `pip install aiofiles`).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from bench.account import read_account
from bench.context import MIB, Context, context
from bench.cpu_memory import backfill, cpu_flags
from bench.downloads import account_flags, account_urls, archiver_download, client_download
from bench.harness import BenchError, Simulator

REPO: Final = Path(__file__).resolve().parent.parent
MB: Final = 1e6


@contextmanager
def baseline_tree(revision: str) -> Iterator[Path]:
    """`archiver/` as of `revision`, unpacked into a temporary folder."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "archiver"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {revision}: {archive.stderr.decode(errors='replace')}")
    with tempfile.TemporaryDirectory(prefix="zsa-baseline-") as folder:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                tar.extractall(folder, filter="data")
            else:  # our own repository's files
                tar.extractall(folder)
        yield Path(folder)


@contextmanager
def running(tree: Path) -> Iterator[None]:
    """Children started inside import `archiver` from `tree`."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def check_tree(tree: Path) -> None:
    with running(tree):
        found = subprocess.run(
            [sys.executable, "-c", "import archiver; print(archiver.__file__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise BenchError(f"a child imports archiver from {found}, not from {tree}")


Measure = Callable[[str], float]


def alternate(
    trees: dict[str, Path],
    pairs: int,
    measure: Measure,
    beside: Callable[[int], dict[str, float]] | None = None,
) -> dict[str, list[float]]:
    """`measure(name)` under each tree, pairs times, the order swapped every pair; `beside(n)`,
    if given, measures other things in each pair, right after the trees."""
    results: dict[str, list[float]] = {name: [] for name in trees}
    names = list(trees)
    for n in range(pairs):
        for name in names if n % 2 == 0 else reversed(names):
            with running(trees[name]):
                results[name].append(measure(f"{name}-{n}"))
        for name, value in (beside(n) if beside else {}).items():
            results.setdefault(name, []).append(value)
        print(
            f"pair {n + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items()),
            flush=True,
        )
    return results


def row5(ctx: Context, trees: dict[str, Path], pairs: int) -> tuple[str, dict[str, list[float]]]:
    with running(REPO), Simulator(cpu_flags(ctx), ctx.log("ab-simulator")) as sim:
        total = read_account(sim).total_messages
        results = alternate(
            trees, pairs, lambda name: total / backfill(ctx, sim, name, total)[0].cpu
        )
    return f"messages per archiver CPU-second ({total:,} messages)", results


def row6(
    ctx: Context, trees: dict[str, Path], pairs: int, curl: bool
) -> tuple[str, dict[str, list[float]]]:
    with running(REPO), Simulator(account_flags(ctx), ctx.log("ab-simulator")) as sim:
        total = sum(size for _, size in account_urls(ctx, sim))

        def measure(name: str) -> float:
            return archiver_download(ctx, sim, name, total).rate / MB

        def with_curl(n: int) -> dict[str, float]:
            plain, synced, _ = client_download(ctx, sim, f"curl-{n}")
            return {"curl": plain / MB, "curl+fsync": synced / MB}

        results = alternate(trees, pairs, measure, with_curl if curl else None)
    return f"download MB/s ({total / MIB:,.0f} MiB, {ctx.sizes.download_parallel} at once)", results


def summary(what: str, results: dict[str, list[float]]) -> str:
    def spread(values: Sequence[float]) -> str:
        return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"

    lines = [what]
    for name, values in results.items():
        lines.append(f"  {name}: median " + spread(values) + f", n={len(values)}")
    base, work = results["baseline"], results["working tree"]
    lines.append(
        "  working tree ÷ baseline, pair by pair: "
        + spread([w / b for b, w in zip(base, work, strict=True)])
    )
    for other in ("curl", "curl+fsync"):
        if other in results:
            ratios = [w / c for w, c in zip(work, results[other], strict=True)]
            lines.append(f"  working tree ÷ {other}: " + spread(ratios))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--row", choices=("5", "6"), required=True)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--baseline", default="HEAD", help="git revision (default HEAD)")
    parser.add_argument("--curl", action="store_true", help="row 6: also curl, every pair")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    try:
        with (
            baseline_tree(args.baseline) as base,
            context("smoke" if args.smoke else "default", None, False, None) as ctx,
        ):
            trees = {"baseline": base, "working tree": REPO}
            os.chdir(ctx.workdir)  # `python -m` puts the working folder first on sys.path
            try:
                for tree in trees.values():
                    check_tree(tree)
                print(f"baseline {args.baseline} against the working tree, {args.pairs} pairs")
                if args.row == "5":
                    what, results = row5(ctx, trees, args.pairs)
                else:
                    what, results = row6(ctx, trees, args.pairs, args.curl)
            finally:
                os.chdir(REPO)
    except BenchError as exc:
        print(f"bench.ab: {exc}", file=sys.stderr)
        return 1
    print(summary(what, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
