"""The processes under test: the simulator and the archiver, each its own process, measured.

The simulator is the real `simulate --json` command; the archiver is the real `run` command
with a config written here. The archiver's time, CPU and peak RSS come from `os.wait4` on its
pid (the kernel's own rusage of that process: what `/usr/bin/time -v` prints), and from
`/proc/<pid>` while it runs. The simulator's CPU is read the same way, so every row can show
that the simulator was not the bottleneck. Linux only (`/proc`), as the daemon itself.
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

TOML_VALUE = str | int | float | bool | Sequence[str]
START_TIMEOUT: Final = 600.0  # generating 1M messages takes ~40 s on a quiet machine
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PROFILE_ENV: Final = "BENCH_PROFILE"  # a folder: run each archiver under bench.profiling


class BenchError(RuntimeError):
    """A benchmark could not run (a process failed, a number is missing)."""


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) of a running process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for pid {pid}")


@dataclass(frozen=True)
class Usage:
    """What one archiver process cost, from the kernel's rusage at its exit."""

    wall: float  # seconds from spawn to reaped exit
    user: float
    system: float
    max_rss: int  # bytes
    returncode: int

    @property
    def cpu(self) -> float:
        return self.user + self.system


def _reap(
    proc: subprocess.Popen[bytes],
    started: float,
    timeout: float,
    tick: Callable[[], object] | None = None,
    interval: float = 0.005,
) -> Usage:
    """Wait for `proc` with wait4 (its own rusage), calling `tick` every `interval` s."""
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            tick()
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError(f"pid {proc.pid} did not exit within {timeout:.0f} s (killed)")
        time.sleep(interval)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it again
    if tick is not None:
        tick()
    return Usage(
        wall=wall,
        user=rusage.ru_utime,
        system=rusage.ru_stime,
        max_rss=rusage.ru_maxrss * 1024,
        returncode=proc.returncode,
    )


def run_measured(args: Sequence[str], timeout: float) -> tuple[Usage, bytes]:
    """Run a command to completion: its usage (wait4) and its stderr."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        try:
            usage = _reap(proc, started, timeout)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        return usage, err.read()


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --- the simulator ---------------------------------------------------------------------------


class Simulator:
    """`python -m archiver simulate --json FLAGS...` as a child process, and its controls."""

    def __init__(self, flags: Mapping[str, TOML_VALUE | None], log: Path) -> None:
        self.flags = flags
        self.log = log
        self.info: dict[str, str] = {}
        self.startup = 0.0  # seconds until it printed its addresses (data generation)
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Simulator:
        args = [sys.executable, "-m", "archiver", "simulate", "--json"]
        for name, value in self.flags.items():
            flag = "--" + name.replace("_", "-")
            if value is None:
                continue
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, str(value)]
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
        assert self._proc.stdout is not None
        line = self._read_line(self._proc, START_TIMEOUT)
        self.startup = time.perf_counter() - started
        self.info = json.loads(line)
        return self

    @staticmethod
    def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), True)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=1.0):
                    line = proc.stdout.readline()
                    if not line:
                        raise BenchError("the simulator exited before printing its addresses")
                    return line
                if proc.poll() is not None:
                    raise BenchError(f"the simulator exited with {proc.returncode}")
        proc.kill()
        raise BenchError(f"the simulator did not start within {timeout:.0f} s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss(self) -> int:
        return peak_rss(self.pid)

    # --- /_sim controls ---

    def _control(self, path: str, body: object | None = None, timeout: float = 120.0) -> Any:
        url = f"{self.info['control_url']}/{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("stats")
        return result

    def switches(self, **changes: object) -> dict[str, Any]:
        result: dict[str, Any] = self._control("switches", changes)
        return result

    def add_messages(
        self, n: int, *, session_id: str | None = None, new_session: bool = False
    ) -> list[dict[str, Any]]:
        body: dict[str, object] = {"n": n, "new_session": new_session}
        if session_id is not None:
            body["session_id"] = session_id
        result: list[dict[str, Any]] = self._control("messages", body)["messages"]
        return result

    def truth(self) -> Iterator[dict[str, Any]]:
        """The ground truth, streamed line by line (1M messages do not fit a JSON array)."""
        url = f"{self.info['control_url']}/truth"
        with urllib.request.urlopen(url, timeout=600) as response:
            for line in response:
                yield json.loads(line)


def api_requests(stats: Mapping[str, Any]) -> int:
    """Zoom API calls the simulator saw (every label, 429s included, OAuth excluded)."""
    return sum(int(v["requests"]) for v in stats["by_label"].values())


def api_limited(stats: Mapping[str, Any]) -> int:
    return sum(int(v["rate_limited"]) for v in stats["by_label"].values())


def endpoint_requests(stats: Mapping[str, Any], endpoint: str) -> int:
    entry = stats["by_endpoint"].get(endpoint)
    return int(entry["requests"]) - int(entry["rate_limited"]) if entry else 0


# --- the archiver ----------------------------------------------------------------------------


def history_start(history_days: float, now: datetime | None = None) -> date:
    """First day of the month that holds the simulator's oldest possible message."""
    moment = (now or datetime.now(UTC)).timestamp() - (history_days + 1) * 86_400
    oldest = datetime.fromtimestamp(moment, UTC)
    return date(oldest.year, oldest.month, 1)


def _toml(value: TOML_VALUE) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(json.dumps(item) for item in value) + "]"


def write_config(
    directory: Path,
    info: Mapping[str, str],
    *,
    sync: Mapping[str, TOML_VALUE] | None = None,
    rate_limits: Mapping[str, TOML_VALUE] | None = None,
    downloads: Mapping[str, TOML_VALUE] | None = None,
) -> Path:
    """A config for `run` against the simulator `info`; the archive goes to directory/archive."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "client_secret"
    secret.write_text(info["client_secret"])
    secret.chmod(0o600)
    tables: dict[str, Mapping[str, TOML_VALUE]] = {
        "zoom": {
            "account_id": info["account_id"],
            "client_id": info["client_id"],
            "client_secret_file": str(secret),
            "api_url": info["api_url"],
            "oauth_url": info["oauth_url"],
        },
        "archive": {"root": str(directory / "archive")},
        "sync": {"history_start": history_start(400).isoformat(), **(sync or {})},
        "rate_limits": {"plan": "unlimited", **(rate_limits or {})},
        "downloads": {
            "allowed_hosts": ["127.0.0.1", "localhost"],
            "allowed_schemes": ["http", "https"],
            "allow_private_addresses": True,
            **(downloads or {}),
        },
        "metrics": {"listen": ""},
        "log": {"level": "warning", "format": "json"},
    }
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items()) + "\n"
        for name, table in tables.items()
    )
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Archiver:
    """`python -m archiver run --config FILE [--once]` as a child process."""

    def __init__(self, config: Path, *, once: bool, log: Path) -> None:
        self.config = config
        self.once = once
        self.log = log
        self.started = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Archiver:
        args = [sys.executable, "-m", "archiver", "run", "--config", str(self.config)]
        profile_dir = os.environ.get(PROFILE_ENV)
        if profile_dir:  # python -m bench --profile DIR: cProfile in every thread
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            out = Path(profile_dir) / f"{self.log.stem}.prof"
            args[1:3] = ["-m", "bench.profiling", str(out)]
        if self.once:
            args.append("--once")
        self.started = time.perf_counter()
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait(
        self, timeout: float, tick: Callable[[], object] | None = None, interval: float = 0.005
    ) -> Usage:
        """Wait for exit (calling `tick` meanwhile); BenchError unless it exited 0."""
        assert self._proc is not None
        usage = _reap(self._proc, self.started, timeout, tick, interval)
        if usage.returncode != 0:
            raise BenchError(f"the archiver exited with {usage.returncode}: {log_tail(self.log)}")
        return usage

    def stop(self, timeout: float = 60.0) -> Usage:
        """SIGTERM (the daemon drains and exits 0), then its usage."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            self._proc.wait()


def run_once(config: Path, log: Path, timeout: float) -> Usage:
    """One `run --once` to completion."""
    archiver = Archiver(config, once=True, log=log).start()
    try:
        return archiver.wait(timeout)
    finally:
        archiver.kill()


def manifest_lines(root: Path) -> Iterator[dict[str, Any]]:
    for segment in sorted((root / "manifest").glob("*.jsonl")):
        with segment.open("rb") as fh:
            for line in fh:
                yield json.loads(line)


def parse_at(text: str) -> float:
    """A manifest `at` (RFC 3339 UTC with microseconds) as Unix seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class Poller:
    """Samples the simulator's stats (pass `sample` as the archiver's `tick`): when each
    counter first moved and when it reached its final value, at the sampling resolution."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.samples: list[tuple[float, dict[str, Any]]] = []

    def sample(self) -> dict[str, Any]:
        stats = self.sim.stats()
        self.samples.append((time.perf_counter(), stats))
        return stats

    def span(self, count: Callable[[Mapping[str, Any]], int]) -> tuple[float, float]:
        """(first, last) sample time at which `count(stats)` had moved / reached its final value.

        `first` is the midpoint between the last sample before the counter moved and the one
        where it had; `last` likewise for its final value: half a sampling interval of error.
        """
        values = [(at, count(stats)) for at, stats in self.samples]
        start_value, final = values[0][1], values[-1][1]
        first = last = values[-1][0]
        for (t0, v0), (t1, v1) in itertools.pairwise(values):
            if v0 == start_value and v1 != start_value and first == values[-1][0]:
                first = (t0 + t1) / 2
            if v0 != final and v1 == final:
                last = (t0 + t1) / 2
        return first, last
