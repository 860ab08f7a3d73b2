"""The benchmark suite at tiny sizes, so it cannot rot: every row runs and reports sane values.

No timing goal, elapsed time or achieved rate is asserted here (those are bench's own verdicts,
and need the default sizes and a quiet machine). What is asserted holds on any machine, fast
or loaded: `python -m bench` runs end to end and prints every row of the table; every figure
is there, measured as often as the preset says, a finite number of the right kind (a rate, a
duration or a CPU time above zero; a count a whole number); the figures of a row agree with
one another and with the counts its notes give (the API calls made, the minimum they are
held to, the messages in the account); and what the set-up fixes comes out as fixed (every
message archived, no fewer calls than the minimum, every figure of the sizes tried).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

Figures = dict[tuple[str, str], dict[str, Any]]


def _figures(report: dict[str, Any]) -> Figures:
    return {(row["number"], f["name"]): f for row in report["rows"] for f in row["figures"]}


def _figure(figures: Figures, row: str, prefix: str) -> dict[str, Any]:
    """The figure of `row` named `prefix`, or else the one figure whose name starts so."""
    if (row, prefix) in figures:
        return figures[row, prefix]
    matches = [f for (n, name), f in figures.items() if n == row and name.startswith(prefix)]
    assert len(matches) == 1, f"row {row}: {len(matches)} figures start with {prefix!r}"
    return matches[0]


def _median(figures: Figures, row: str, prefix: str) -> float:
    value = _figure(figures, row, prefix)["median"]
    assert isinstance(value, int | float) and not isinstance(value, bool), (row, prefix, value)
    return float(value)


def _notes(report: dict[str, Any], row: str) -> str:
    (found,) = [r for r in report["rows"] if r["number"] == row]
    return "\n".join(found["notes"])


def _counts(text: str, pattern: str) -> tuple[int, ...]:
    """The whole numbers `pattern`'s groups match in a row's notes (1,050 is 1050)."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the notes:\n{text}"
    return tuple(int(group.replace(",", "")) for group in match.groups())


# What each figure is, by the start of its name; any other figure is a rate, a ratio of rates,
# a duration, a CPU time or a memory size: finite and above zero.
COUNTS = ("429 answers", "not archived", "events not acknowledged")  # whole numbers >= 0
# Finite and >= 0: a CPU time read in /proc clock ticks (10 ms) can be 0 over a short span, a
# share of 429s is 0 when none came. Not a rate or a throughput (messages per second, per
# CPU-second): above zero, as every figure not named here.
ZERO_OR_MORE = (
    "simulator load",
    "SeaweedFS load",
    "archiver CPU per poll",
    "archiver CPU with no news",
    "curl CPU",
    "aria2c CPU",
    "rclone CPU",
    "429 answers / requests",
    "  of which sync",
)
# Creation-to-archive latencies (rows 8a, 8b): above zero, since a message is archived a poll or
# a webhook round trip after its creation at the soonest, and infinite when it never arrived
# (each row's checks below tie that to its count of messages not archived). Row 16b's lags
# (a line durable -> its chunk in the bucket): finite and >= 0.
LATENCIES = ("p50 ", "p99 ", "max")
ANY_FINITE = ("growth with the attachment",)  # a difference of two peaks


def _size(size: int) -> str:
    """An attachment's size as row 7 names it."""
    return f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / 1e6:g} MB"


def _check_kind(row: str, name: str, value: float) -> None:
    where = (row, name, value)
    assert not math.isnan(value), where
    if name.startswith(COUNTS) and "/" not in name:
        assert value >= 0 and value == int(value), where
    elif name.startswith(LATENCIES) and row.startswith("8"):
        assert value > 0, where
    elif name.startswith(ZERO_OR_MORE) or (name.startswith(LATENCIES) and row == "16b"):
        assert math.isfinite(value) and value >= 0, where
    elif name.startswith(ANY_FINITE):
        assert math.isfinite(value), where
    else:
        assert math.isfinite(value) and value > 0, where


def _check_every_figure(report: dict[str, Any], runs: Callable[[str, str], int]) -> None:
    """Each figure measured (no row dropped a value), `runs(row, name)` times, of its kind."""
    for (number, name), fig in _figures(report).items():
        assert fig["median"] is not None, f"row {number}: {name!r} was not measured"
        assert fig["n"] == runs(number, name), (number, name, fig)
        assert fig["min"] <= fig["median"] <= fig["max"], (number, name, fig)
        for key in ("median", "min", "max"):
            _check_kind(number, name, float(fig[key]))


def _check_latencies(
    figures: Figures, row: str, p99_name: str, unarrived: str, messages: int
) -> None:
    """0 < p50 <= p99 <= max (no message is archived the instant it is created); the count of
    messages that never arrived is one of them, and the worst latency is finite exactly when
    that count is 0 (a lost message is infinitely late)."""
    p50 = _median(figures, row, "p50 ")
    p99 = _median(figures, row, p99_name)
    worst = _median(figures, row, "max")
    lost = _median(figures, row, unarrived)
    assert 0 < p50 <= p99 <= worst, (row, p50, p99, worst)
    assert math.isfinite(p50), (row, p50)  # half the messages at least arrived
    assert 0 <= lost <= messages, (row, lost, messages)
    assert math.isfinite(worst) == (lost == 0), (row, worst, lost)


def _report(values: dict[tuple[str, str], float]) -> dict[str, Any]:
    """A report of one run per figure, as `python -m bench --json` writes it."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for (number, name), value in values.items():
        fig = {"name": name, "median": value, "min": value, "max": value, "n": 1}
        rows.setdefault(number, []).append(fig)
    return {"rows": [{"number": n, "figures": figs} for n, figs in rows.items()]}


# A sound report of rows 8a, 8b and 16b (one run each), the figures the checks judge by kind.
SOUND: dict[tuple[str, str], float] = {
    ("8a", "p50 creation → durable line"): 0.9,
    ("8a", "p99 creation → durable line"): 1.8,
    ("8a", "max"): 1.9,
    ("8a", "not archived 4 s after the last one"): 0,
    ("8b", "p50 creation → acknowledged (durable)"): 0.004,
    ("8b", "p99 creation → acknowledged (durable)"): 0.02,
    ("8b", "max"): 0.03,
    ("8b", "p99 creation → line `at` (8a's measure)"): 0.02,
    ("8b", "events not acknowledged"): 0,
    ("5", "messages per archiver CPU-second"): 20_000.0,
    ("5", "messages per wall-second"): 9_000.0,
    ("6", "curl CPU"): 0.0,  # below a clock tick: may be 0
    ("16b", "p50 line durable → its chunk in the bucket"): 0.4,
    ("16b", "max"): 0.9,
    ("16b", "archiving rate, first to last message line"): 800.0,
    ("16b", "objects written per 1,000 messages"): 12.0,
}
ZERO_LATENCIES_8A = {
    ("8a", "p50 creation → durable line"): 0.0,
    ("8a", "p99 creation → durable line"): 0.0,
    ("8a", "max"): 0.0,
}
ZERO_LATENCIES_8B = {
    ("8b", "p50 creation → acknowledged (durable)"): 0.0,
    ("8b", "p99 creation → acknowledged (durable)"): 0.0,
    ("8b", "max"): 0.0,
}


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(ZERO_LATENCIES_8A, id="8a all-zero latencies"),
        pytest.param(ZERO_LATENCIES_8B, id="8b all-zero latencies"),
        pytest.param({("8a", "p50 creation → durable line"): 0.0}, id="8a p50 zero"),
        pytest.param({("8b", "max"): 0.0}, id="8b max zero"),
        pytest.param({("8a", "p99 creation → durable line"): -0.1}, id="8a p99 negative"),
        pytest.param({("8a", "max"): math.nan}, id="8a max nan"),
        pytest.param({("16b", "archiving rate, first to last message line"): 0.0}, id="16b rate 0"),
        pytest.param({("5", "messages per wall-second"): 0.0}, id="5 throughput 0"),
        pytest.param({("5", "messages per archiver CPU-second"): 0.0}, id="5 CPU rate 0"),
        pytest.param({("5", "messages per wall-second"): math.inf}, id="5 throughput inf"),
        pytest.param({("16b", "max"): math.inf}, id="16b lag inf"),
        pytest.param({("8a", "not archived 4 s after the last one"): 0.5}, id="count not whole"),
    ],
)
def test_the_checks_refuse_a_broken_report(broken: dict[tuple[str, str], float]) -> None:
    _check_every_figure(_report(SOUND), lambda _row, _name: 1)  # the sound one passes
    with pytest.raises(AssertionError):
        _check_every_figure(_report(SOUND | broken), lambda _row, _name: 1)


@pytest.mark.parametrize(
    ("broken", "row", "p99", "lost"),
    [
        (ZERO_LATENCIES_8A, "8a", "p99 creation → durable line", "not archived"),
        (ZERO_LATENCIES_8B, "8b", "p99 creation → acknowledged", "events not acknowledged"),
    ],
)
def test_the_latency_checks_refuse_all_zero_latencies(
    broken: dict[tuple[str, str], float], row: str, p99: str, lost: str
) -> None:
    _check_latencies(_figures(_report(SOUND)), row, p99, lost, 10)
    with pytest.raises(AssertionError):
        _check_latencies(_figures(_report(SOUND | broken)), row, p99, lost, 10)
    # One message lost: the worst latency is infinite, and must be.
    (lost_name,) = [name for (n, name) in SOUND if n == row and name.startswith(lost)]
    late = SOUND | {(row, lost_name): 1, (row, "max"): math.inf}
    _check_latencies(_figures(_report(late)), row, p99, lost, 10)
    with pytest.raises(AssertionError):
        _check_latencies(_figures(_report(SOUND | {(row, lost_name): 1})), row, p99, lost, 10)


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["preset"] == "smoke"
    sizes = report["sizes"]
    numbers = [row["number"] for row in report["rows"]]
    assert numbers == ["1", "2", "3", "4", "5", "6", "7", "8a", "8b"], numbers
    assert all(row["error"] is None for row in report["rows"]), report["rows"]
    for number in numbers:
        assert f"| {number} |" in result.stdout, f"row {number} missing from the table"
    assert "Machine:" in result.stdout

    def runs(row: str, name: str) -> int:
        # Row 7's own points take `memory_runs` runs; its row-5 point and the others `runs`.
        return int(sizes["memory_runs"] if row == "7" and "(row 5)" not in name else sizes["runs"])

    _check_every_figure(report, runs)
    figures = _figures(report)
    assert sizes["runs"] == 1  # below, a median is the one run's value: figures compose exactly
    approx = pytest.approx

    # Row 1: the simulator counted every Medium request, 429s included; the notes split the
    # answered ones into list and sync calls.
    messages1, requests, lists, syncs = _counts(
        _notes(report, "1"), r"\(([\d,]+) messages, ([\d,]+) requests: (\d+) list \+ (\d+) sync"
    )
    limited = _median(figures, "1", "429 answers")
    assert messages1 > 0 and lists >= 1 and syncs >= 1
    assert requests == lists + syncs + limited, (requests, lists, syncs, limited)

    # Row 2: the archiver believes in 15/s against 10/s; every message is archived all the same.
    assert _median(figures, "2", "messages archived") == 1.0
    assert 0 <= _median(figures, "2", "429 answers / requests") <= 100

    # Row 3: the calls made, against the minimum the account allows (a lower bound: a complete
    # backfill cannot take fewer) and the confirmations; the three figures are those counts.
    notes3 = _notes(report, "3")
    (messages3,) = _counts(notes3, r"\(([\d,]+) messages\)")
    min_sync, min_list = _counts(notes3, r"minimum: ([\d,]+) sync .*?\+ ([\d,]+) list")
    (confirming,) = _counts(notes3, r"confirmations: ([\d,]+)")
    made_sync, made_list = _counts(notes3, r"made: ([\d,]+) sync \+ ([\d,]+) list")
    made, minimum = made_sync + made_list, min_sync + min_list
    assert made_sync >= min_sync and made_list >= min_list, notes3
    assert _median(figures, "3", "API calls / (minimum") == approx(made / (minimum + confirming))
    assert _median(figures, "3", "API calls / minimum") == approx(made / minimum)
    assert _median(figures, "3", "API calls / minimum") >= 1
    assert _median(figures, "3", "API calls per 1000") == approx(1000 * made / messages3)

    # Row 4: calls per poll, split into list and sync calls; one call per session is the
    # account's sessions, so the ratio times the calls is that number, and above 1 (a poll
    # that synced every session would make it 1 or less).
    per_poll = _median(figures, "4", "API calls per poll")
    ratio = _median(figures, "4", "one-call-per-session")
    parts = _median(figures, "4", "  of which session list") + _median(
        figures, "4", "  of which sync"
    )
    assert parts <= per_poll * (1 + 1e-9), (parts, per_poll)
    assert ratio * per_poll == approx(sizes["idle_sessions"])
    assert ratio > 1

    # Row 5: the CPU figures are one measure seen two ways; its peak RSS is row 7's point.
    rate = _median(figures, "5", "messages per archiver CPU-second")
    assert rate * _median(figures, "5", "archiver CPU at Zoom's max rate") == approx(5000)
    rss5 = _median(figures, "5", "archiver peak RSS")
    (messages5,) = _counts(_notes(report, "5"), r": ([\d,]+) messages in")
    assert _median(figures, "7", f"peak RSS, {messages5:,} messages (row 5)") == approx(rss5)

    # Row 6: each ratio is the archiver's rate over the client's, pair by pair (one pair
    # here); an fsync added to curl's time can only raise the ratio; the archiver's whole
    # process takes longer than its download phase. aria2c comes from scripts/system-deps
    # (make test runs it first): its figures must be there.
    archiver = _median(figures, "6", "archiver, download phase")
    assert _median(figures, "6", "archiver ÷ curl") == approx(
        archiver / _median(figures, "6", "curl")
    )
    assert _median(figures, "6", "archiver ÷ (curl + fsync") >= _median(
        figures, "6", "archiver ÷ curl"
    )
    assert _median(figures, "6", "archiver, whole process") <= archiver
    assert _median(figures, "6", "archiver ÷ aria2c") == approx(
        archiver / _median(figures, "6", "aria2c")
    )

    # Row 7: a point for every size tried, each of a Python process's size; the growth is
    # the difference of the two attachment points.
    names7 = [name for (n, name) in figures if n == "7"]
    for sessions in sizes["memory_sessions"]:
        assert any(name.startswith(f"peak RSS, {sessions:,} sessions, ") for name in names7)
    for (number, name), fig in figures.items():
        if number == "7" and name.startswith("peak RSS"):
            assert 10 < fig["median"] < 1000, (name, fig)
    small, big = (
        _median(figures, "7", f"peak RSS, one {_size(size)} attachment")
        for size in sorted(sizes["memory_attachments"])
    )
    assert _median(figures, "7", "growth with the attachment") == approx(big - small)

    # Rows 8a, 8b: the latencies are ordered and tied to the count of messages not archived.
    (messages8a,) = _counts(_notes(report, "8a"), r"\((\d+) messages\)")
    (messages8b,) = _counts(_notes(report, "8b"), r"\((\d+) messages\)")
    assert messages8a > 0 and messages8b > 0
    _check_latencies(figures, "8a", "p99 creation → durable", "not archived", messages8a)
    _check_latencies(
        figures, "8b", "p99 creation → acknowledged", "events not acknowledged", messages8b
    )


_NUMBER = r"(\d[\d,]*(?:\.\d+)?)"  # a pair's figure, as `{:,.0f}` prints it
_RATIO = r"(\d[\d.]*(?:e[-+]\d+)?)"  # as `{:.3g}` prints it


def test_ab_smoke() -> None:
    """`python -m bench.ab` unpacks HEAD's archiver, runs both trees pair by pair, and reports
    each tree's figures and the ratio of each pair. Not how near 1 that ratio is (a timing
    verdict): that each pair measured both trees, and the summary is made of those pairs."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.ab", "--row", "5", "--pairs", "2", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    pairs = [line for line in lines if line.startswith("pair ")]
    assert [line.split(":")[0] for line in pairs] == ["pair 1", "pair 2"], result.stdout
    measured: dict[str, list[float]] = {"baseline": [], "working tree": []}
    for line in pairs:
        for tree, values in measured.items():
            (value,) = re.findall(rf"\b{tree} {_NUMBER}", line)
            values.append(float(value.replace(",", "")))
    for tree, values in measured.items():
        assert all(math.isfinite(v) and v > 0 for v in values), (tree, values)
        summary = next(line for line in lines if line.strip().startswith(f"{tree}: median"))
        assert summary.strip().endswith("n=2"), summary
    ratio = next(line for line in lines if "working tree ÷ baseline" in line)
    spread = re.search(rf"pair by pair: {_RATIO} \({_RATIO}-{_RATIO}\)$", ratio)
    assert spread, ratio
    median, low, high = (float(v) for v in spread.groups())
    assert 0 < low <= median <= high and math.isfinite(high), ratio
    # The summary's ratio is the pairs' own (two pairs: the mean of their two ratios), read
    # back from the pair lines, which round each figure to a whole number.
    pair_ratios = [
        w / b for b, w in zip(measured["baseline"], measured["working tree"], strict=True)
    ]
    assert median == pytest.approx(sum(pair_ratios) / 2, rel=0.02), (ratio, pair_ratios)


def test_replica_bench_smoke(tmp_path: Path) -> None:
    """`python -m bench.replica --smoke`: both parts run (SeaweedFS, the replicator, rclone,
    the daemon with a replica) and report sane figures. rclone comes from scripts/system-deps."""
    out = tmp_path / "replica.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.replica", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [row["number"] for row in report["rows"]] == ["16a", "16b"], report["rows"]
    assert all(row["error"] is None for row in report["rows"]), report["rows"]
    for number in ("16a", "16b"):
        assert f"| {number} |" in result.stdout, f"row {number} missing from the table"
    sizes = report["sizes"]
    # 16a measures `rounds` pairs; 16b one run.
    _check_every_figure(report, lambda row, _name: sizes["rounds"] if row == "16a" else 1)
    figures = _figures(report)
    assert sizes["rounds"] == 1  # one pair: the ratio is the two rates' own
    ours = _median(figures, "16a", "replicator, replication phase")
    theirs = _median(figures, "16a", "rclone copy")
    assert _median(figures, "16a", "replicator ÷ rclone copy") == pytest.approx(ours / theirs)
    assert _median(figures, "16a", "replicator, whole process") <= ours
    p50 = _median(figures, "16b", "p50 line durable")
    p99 = _median(figures, "16b", "p99 line durable")
    assert 0 <= p50 <= p99 <= _median(figures, "16b", "max") and math.isfinite(p99)
    notes = _notes(report, "16b")
    (messages,) = _counts(notes, r"([\d,]+) messages in full")
    lines, chunks = _counts(notes, r"([\d,]+) lines in ([\d,]+) chunks")
    assert messages > 0 and 1 <= chunks <= lines, notes
    assert lines >= messages  # a line per message, and the daemon's events besides
    per_thousand = _median(figures, "16b", "objects written per 1,000 messages")
    assert per_thousand == pytest.approx(1000 * chunks / messages)
