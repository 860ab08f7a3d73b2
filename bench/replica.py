"""Issue 16's measurements: the replicator against `rclone copy`, and the replication lag.

    .venv/bin/python -m bench.replica                      # 3 pairs of 2 GiB, then the lag run
    .venv/bin/python -m bench.replica --rounds 5 --skip-lag
    .venv/bin/python -m bench.replica --smoke --json out.json   # tiny: what the test suite runs

One SeaweedFS (`weed mini`, started by `tests.replica.seaweed`, the replica tests' server) on
loopback serves both parts.

Throughput: an archive of `blobs` x `blob_bytes` (8 x 256 MiB, like row 6), written by the
project's own manifest writer (one attachment line per blob). Then, pair by pair, each into a
fresh bucket with Object Lock: the replicator (a child process running `Replicator.catch_up`,
the code `run --once` ends with, over the archive: every blob, then the chunk) and
`rclone copy` of the same blob files (Debian's rclone, its defaults: 4 transfers, 4 parts in
flight each), configured by `RCLONE_CONFIG_*` variables with the archiver's credentials, its
config and cache paths in the work folder. Ratio = replicator bytes/s ÷ rclone bytes/s of the
same pair; the replicator's time is its replication phase (the child's clock around
`catch_up`, after imports and the start-up bucket check), rclone's its whole process.

Lag: the daemon (`run`, not `--once`) with a replica, backfilling an account of full
250-message pages (row 5's account) at Zoom's maximum rate: the simulator enforces Business+
limits (Medium 20 calls/s x 250 = 5,000 msg/s, the rate row 5 quotes) and the archiver uses the
whole budget. This process lists the bucket's chunks every `POLL` seconds and notes when each
first appears; a line's lag = that time - its `at` (stamped as its group commit starts; the
fsync follows within milliseconds). p50/p99/max over every line up to the last message, and
the objects written per 1,000 messages (chunks: no attachments, no signing key).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from archiver.replica.upload import MULTIPART_ABOVE, PART_BYTES, PART_CONCURRENCY
from bench.harness import (
    TOML_VALUE,
    Archiver,
    BenchError,
    Simulator,
    Usage,
    cpu_seconds,
    log_tail,
    manifest_lines,
    parse_at,
    write_config,
)
from bench.report import (
    Goal,
    Row,
    as_json,
    figure,
    machine,
    machine_line,
    percentile,
    render_notes,
    render_table,
)
from tests.replica.seaweed import SeaweedS3

if TYPE_CHECKING:
    from archiver.config import Secret

MIB: Final = 1 << 20
MB: Final = 1e6
PREFIX: Final = "bench/"
POLL: Final = 0.25  # seconds between listings of the bucket in the lag run
LAG_MARGIN: Final = 5.0  # the objective: p99 <= max_lag + 5 s
RATIO_GOAL: Final = 0.8


@dataclass(frozen=True)
class Sizes:
    blobs: int = 8
    blob_bytes: int = 256 * MIB
    rounds: int = 3
    # the lag run: row 5's account (full pages), at Business+ limits
    lag_sessions: int = 200
    lag_mean_messages: float = 1000.0
    lag_rate_limits: bool = True
    max_lag: float = 10.0
    timeout: float = 1200.0


PRESETS: Final = {
    "default": Sizes(),
    "smoke": Sizes(
        blobs=2,
        blob_bytes=4 * MIB,
        rounds=1,
        lag_sessions=4,
        lag_mean_messages=300.0,
        lag_rate_limits=False,
        max_lag=2.0,
        timeout=120.0,
    ),
}


# --- processes ---------------------------------------------------------------------------


def run_measured(args: Sequence[str], env: Mapping[str, str], timeout: float) -> Usage:
    """Run a command to completion with `env`: its own rusage (wait4). BenchError unless 0."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=dict(env))
        deadline = time.monotonic() + timeout
        try:
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{args[0]} did not finish within {timeout:.0f} s")
                time.sleep(0.005)
        finally:
            if not pid:
                proc.kill()
                os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it again
        usage = Usage(
            wall=time.perf_counter() - started,
            user=rusage.ru_utime,
            system=rusage.ru_stime,
            max_rss=rusage.ru_maxrss * 1024,
            returncode=proc.returncode,
        )
        if usage.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode("utf-8", "replace")
            raise BenchError(f"{Path(args[0]).name} exited {usage.returncode}: {tail}")
        return usage


def server_cpu(server: SeaweedS3) -> float:
    assert server.process is not None
    return cpu_seconds(server.process.pid)


def secret_file(server: SeaweedS3, folder: Path) -> Path:
    return server.write_secret(folder / "s3_secret")


# --- the archive -------------------------------------------------------------------------


def fill(path: Path, size: int, seed: int) -> str:
    """`size` bytes, every MiB different (cheaply), written and hashed; returns the SHA-256."""
    block = os.urandom(MIB)
    sha = hashlib.sha256()
    with path.open("wb") as fh:
        for i in range(0, size, MIB):
            data = (block[:-16] + seed.to_bytes(8, "big") + i.to_bytes(8, "big"))[: size - i]
            sha.update(data)
            fh.write(data)
    return sha.hexdigest()


def build_archive(root: Path, blobs: int, blob_bytes: int) -> int:
    """ROOT with `blobs` blobs and one attachment line each (the project's writer); returns
    the manifest's last seq."""
    from archiver.store.layout import blob_path, blob_relpath, prepare_root
    from archiver.store.state import State
    from archiver.store.writer import ManifestWriter

    prepare_root(root)
    entries = []
    for n in range(blobs):
        tmp = root / "tmp" / f"blob-{n}"
        sha = fill(tmp, blob_bytes, n)
        final = blob_path(root, sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(final)
        final.chmod(0o444)
        entries.append(
            {
                "kind": "attachment",
                "session_id": "bench-session",
                "message_id": f"bench-message-{n}",
                "attachment_id": f"bench-attachment-{n}",
                "name": f"video-{n}.mp4",
                "type": "MP4",
                "size": blob_bytes,
                "sha256": sha,
                "blob": blob_relpath(sha),
            }
        )

    async def write() -> int:
        state = State.open(root)
        try:
            writer = await ManifestWriter.open(root, state)
            try:
                seqs = await writer.append_entries(entries)
            finally:
                await writer.close()
        finally:
            state.close()
        return seqs[-1]

    return asyncio.run(write())


# --- the replicator side (a child process) -----------------------------------------------


async def _replicate(args: argparse.Namespace, secret: Secret) -> dict[str, Any]:
    from archiver.config import ReplicaConfig
    from archiver.replica.bucket import check_bucket, open_client
    from archiver.replica.replicator import Replicator

    config = ReplicaConfig(
        enabled=True,
        endpoint_url=args.endpoint,
        bucket=args.bucket,
        prefix=PREFIX,
        access_key_id=args.key_id,
        lock_mode="COMPLIANCE",
        retention_days=1,
    )
    async with open_client(config, secret) as s3:
        await check_bucket(s3, config)  # what the daemon does before it starts the task
        replicator = Replicator(config, args.root, s3, durable_seq=lambda: args.last_seq)
        started = time.perf_counter()
        complete = await replicator.catch_up(time.monotonic() + args.timeout)
        seconds = time.perf_counter() - started
    if not complete:
        raise BenchError(f"the replicator did not finish: {replicator.behind()}")
    return {"seconds": seconds, "uploads": dict(replicator.stats.uploads)}


def child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replica child")
    parser.add_argument("root", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--last-seq", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from archiver.config import Secret

    secret = Secret(Path(args.secret_file).read_text(encoding="utf-8").strip())
    args.out.write_text(json.dumps(asyncio.run(_replicate(args, secret))))
    return 0


def replicator_run(
    server: SeaweedS3, root: Path, bucket: str, last_seq: int, folder: Path, timeout: float
) -> tuple[Usage, dict[str, Any]]:
    out = folder / f"{bucket}.json"
    args = [
        sys.executable,
        "-m",
        "bench.replica",
        "child",
        str(root),
        f"--endpoint={server.endpoint_url}",
        f"--bucket={bucket}",
        f"--key-id={server.access_key_id}",
        f"--secret-file={secret_file(server, folder)}",
        f"--last-seq={last_seq}",
        f"--timeout={timeout}",
        f"--out={out}",
    ]
    usage = run_measured(args, os.environ, timeout)
    result: dict[str, Any] = json.loads(out.read_text())
    return usage, result


# --- the rclone side ---------------------------------------------------------------------


def rclone_env(server: SeaweedS3, folder: Path) -> dict[str, str]:
    """A remote `seaweed` from environment variables only: no config file, nothing of
    rclone's outside `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    remote = {
        "TYPE": "s3",
        "PROVIDER": "SeaweedFS",
        "ENDPOINT": server.endpoint_url,
        "REGION": server.region,
        "ACCESS_KEY_ID": server.access_key_id,
        "SECRET_ACCESS_KEY": server.secret_access_key,
        "NO_CHECK_BUCKET": "true",  # the archiver's identity may not create buckets
    }
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "XDG_CONFIG_HOME": str(folder),
        "XDG_CACHE_HOME": str(folder),
        "RCLONE_CONFIG": str(folder / "rclone.conf"),  # absent: the variables are the config
        "RCLONE_CACHE_DIR": str(folder / "cache"),
        **{f"RCLONE_CONFIG_SEAWEED_{k}": v for k, v in remote.items()},
    }


def rclone_run(server: SeaweedS3, root: Path, bucket: str, folder: Path, timeout: float) -> Usage:
    rclone = shutil.which("rclone")
    if rclone is None:
        raise BenchError("rclone not found: run scripts/system-deps (Debian's rclone)")
    args = [rclone, "copy", str(root / "blobs"), f"seaweed:{bucket}/{PREFIX}blobs"]
    return run_measured(args, rclone_env(server, folder / "rclone"), timeout)


async def _objects(server: SeaweedS3, bucket: str, prefix: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    async with server.client() as s3:
        async for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                sizes[obj["Key"]] = obj["Size"]
    return sizes


def check_blobs(server: SeaweedS3, bucket: str, root: Path) -> None:
    """Every blob arrived, at its size: a copy that went wrong measures nothing."""
    held = asyncio.run(_objects(server, bucket, f"{PREFIX}blobs/"))
    for path in (root / "blobs").rglob("*"):
        if path.is_file():
            key = f"{PREFIX}{path.relative_to(root).as_posix()}"
            if held.get(key) != path.stat().st_size:
                raise BenchError(f"{bucket}: {key} missing or of the wrong size")


def throughput(server: SeaweedS3, work: Path, sizes: Sizes) -> Row:
    root = work / "archive"
    built = time.monotonic()
    last_seq = build_archive(root, sizes.blobs, sizes.blob_bytes)
    built = time.monotonic() - built
    total = sizes.blobs * sizes.blob_bytes
    ratios, ours, ours_whole, theirs = [], [], [], []
    our_cpu, their_cpu, weed_ours, weed_theirs = [], [], [], []
    for n in range(sizes.rounds):
        bucket = server.create_bucket(f"replicator-{n}", lock=True)
        weed = server_cpu(server)
        usage, result = replicator_run(server, root, bucket, last_seq, work, sizes.timeout)
        weed = server_cpu(server) - weed
        check_blobs(server, bucket, root)
        if result["uploads"].get("blob") != sizes.blobs:
            raise BenchError(f"the replicator uploaded {result['uploads']}")
        ours.append(total / result["seconds"] / MB)
        ours_whole.append(total / usage.wall / MB)
        our_cpu.append(usage.cpu)
        weed_ours.append(weed / result["seconds"])

        bucket = server.create_bucket(f"rclone-{n}", lock=True)
        weed = server_cpu(server)
        usage = rclone_run(server, root, bucket, work, sizes.timeout)
        weed = server_cpu(server) - weed
        check_blobs(server, bucket, root)
        theirs.append(total / usage.wall / MB)
        their_cpu.append(usage.cpu)
        weed_theirs.append(weed / usage.wall)
        ratios.append(ours[-1] / theirs[-1])
    return Row(
        "16a",
        "replica throughput",
        [
            figure("replicator ÷ rclone copy (pair by pair)", ratios, "", Goal(">=", RATIO_GOAL)),
            figure("replicator, replication phase", ours, "MB/s"),
            figure("replicator, whole process (imports, client, bucket check)", ours_whole, "MB/s"),
            figure("rclone copy", theirs, "MB/s"),
            figure("replicator CPU", our_cpu, "s"),
            figure("rclone CPU", their_cpu, "s"),
            figure("SeaweedFS load, replicator", weed_ours, "cores"),
            figure("SeaweedFS load, rclone", weed_theirs, "cores"),
        ],
        [
            f"{sizes.blobs} blobs of {sizes.blob_bytes / MIB:g} MiB "
            f"({total / (1 << 30):.2f} GiB), one attachment line each, written in {built:.0f} s",
            "replicator: Replicator.catch_up in a child process (check_bucket first, not timed); "
            f"blobs one after another, each above {MULTIPART_ABOVE / MIB:g} MiB in "
            f"{PART_BYTES / MIB:g} MiB parts, {PART_CONCURRENCY} in flight; "
            "COMPLIANCE, 1 day",
            "rclone copy of blobs/ with its defaults (--transfers 4, 5 MiB parts, 4 in flight "
            "per file), --s3-no-check-bucket; same credentials, same server",
            f"pairs: replicator then rclone, {sizes.rounds} times, each into a fresh bucket "
            "with Object Lock",
        ],
    )


# --- the lag ---------------------------------------------------------------------------


def lag_flags(sizes: Sizes) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "seed": 1,
        "sessions": sizes.lag_sessions,
        "mean_messages": sizes.lag_mean_messages,
        "max_messages": int(sizes.lag_mean_messages * 10),
        "busy_fraction": 0.0,
        "attachment_probability": 0.0,
    }
    if sizes.lag_rate_limits:
        flags.update(rate_limits=True, plan="business")
    return flags


def replica_table(server: SeaweedS3, bucket: str, folder: Path, max_lag: float) -> str:
    return (
        "[replica]\nenabled = true\n"
        f'endpoint_url = "{server.endpoint_url}"\nregion = "{server.region}"\n'
        f'bucket = "{bucket}"\nprefix = "{PREFIX}"\n'
        f'access_key_id = "{server.access_key_id}"\n'
        f'secret_access_key_file = "{secret_file(server, folder)}"\n'
        f'lock_mode = "COMPLIANCE"\nretention_days = 1\nmax_lag = {max_lag}\n'
    )


class MessageCounter:
    """Message lines in the local manifest so far, reading only what is new."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self._read: dict[Path, int] = {}
        self._partial = b""

    def poll(self) -> int:
        for segment in sorted((self.root / "manifest").glob("*.jsonl")):
            offset = self._read.get(segment, 0)
            with segment.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
            cut = data.rfind(b"\n") + 1
            # Canonical lines: the top-level kind comes right after "digest":"...", and a
            # record's own quotes are escaped, so this counts message lines only.
            self.count += data[:cut].count(b'"kind":"message"')
            self._read[segment] = offset + cut
        return self.count


def lag(server: SeaweedS3, work: Path, sizes: Sizes) -> Row:
    folder = work / "lag"
    bucket = server.create_bucket("lag", lock=True)
    seen: dict[str, float] = {}  # chunk key -> first time this process saw it listed
    with Simulator(lag_flags(sizes), work / "lag-simulator.log") as sim:
        total = sum(1 for item in sim.truth() if item["kind"] == "message")
        limits: dict[str, TOML_VALUE] = (
            {"plan": "business", "share": 1.0} if sizes.lag_rate_limits else {}
        )
        config = write_config(folder, sim.info, rate_limits=limits)
        with config.open("a", encoding="utf-8") as fh:
            fh.write(replica_table(server, bucket, folder, sizes.max_lag))
        daemon = Archiver(config, once=False, log=work / "lag-daemon.log").start()
        try:
            asyncio.run(_watch(server, bucket, folder / "archive", total, seen, sizes))
            daemon.stop()
        finally:
            daemon.kill()
    return _lag_row(folder / "archive", seen, total, sizes)


async def _watch(
    server: SeaweedS3, bucket: str, root: Path, total: int, seen: dict[str, float], sizes: Sizes
) -> None:
    """List the bucket's chunks every POLL s until it holds every message of the account."""
    counter = MessageCounter(root)
    target = 0  # the manifest's seq once every message was in it
    deadline = time.monotonic() + sizes.timeout
    async with server.client() as s3:
        while time.monotonic() < deadline:
            started = time.monotonic()
            after = max(seen, default="")
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{PREFIX}manifest/", StartAfter=after
            ):
                now = time.time()
                for obj in page.get("Contents", []):
                    seen.setdefault(obj["Key"], now)
            if not target and counter.poll() >= total:
                target = _last_seq(root)
            if target and seen and _chunk_last(max(seen)) >= target:
                return
            await asyncio.sleep(max(0.0, POLL - (time.monotonic() - started)))
    raise BenchError(f"the bucket did not hold all {total} messages within {sizes.timeout} s")


def _last_seq(root: Path) -> int:
    last = sorted((root / "manifest").glob("*.jsonl"))[-1]
    with last.open("rb") as fh:
        fh.seek(max(0, last.stat().st_size - 65536))
        tail = fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    seq: int = json.loads(tail)["seq"]
    return seq


def _chunk_last(key: str) -> int:
    # {prefix}manifest/<segment>/<first>-<last>.jsonl
    return int(key.rsplit("-", 1)[1].split(".", maxsplit=1)[0])


def _lag_row(root: Path, seen: Mapping[str, float], total: int, sizes: Sizes) -> Row:
    chunks = sorted((_chunk_last(key), at) for key, at in seen.items())
    lags: list[float] = []
    ends: list[float] = []  # each chunk's last line: the close and the PUT, little waiting
    first_message = last_message = 0.0
    index = 0
    for line in manifest_lines(root):
        seq = line["seq"]
        while index < len(chunks) and chunks[index][0] < seq:
            index += 1
        if index == len(chunks):
            break  # after the last message: stop events, not measured
        at = parse_at(line["at"])
        lags.append(chunks[index][1] - at)
        if seq == chunks[index][0]:
            ends.append(lags[-1])
        if line["kind"] == "message":
            first_message = first_message or at
            last_message = at
    if not lags:
        raise BenchError("no line was measured")
    objects = len(seen)
    rate = total / (last_message - first_message) if last_message > first_message else 0.0
    return Row(
        "16b",
        "replica lag",
        [
            figure("p50 line durable → its chunk in the bucket", [percentile(lags, 50)], "s"),
            figure(
                "p99 line durable → its chunk in the bucket",
                [percentile(lags, 99)],
                "s",
                Goal("<=", sizes.max_lag + LAG_MARGIN),
            ),
            figure("max", [max(lags)], "s"),
            figure("p50 a chunk's last line → in the bucket", [percentile(ends, 50)], "s"),
            figure("objects written per 1,000 messages", [1000 * objects / total]),
            figure("archiving rate, first to last message line", [rate], "msg/s"),
        ],
        [
            f"simulator: {' '.join(f'--{k}={v}' for k, v in lag_flags(sizes).items())}: "
            f"{total:,} messages in full 250-message pages",
            "archiver daemon: "
            + (
                "rate_limits.plan = business, share = 1.0 (Zoom's 5,000 msg/s); "
                if sizes.lag_rate_limits
                else "no rate limits; "
            )
            + f"[replica] max_lag = {sizes.max_lag:g}, chunk_max_bytes 8 MiB (default), "
            "COMPLIANCE; no signing key, no attachments",
            f"{len(lags):,} lines in {objects} chunks; in the bucket = first listed (every "
            f"{POLL} s); durable = the line's `at`",
        ],
    )


# --- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.replica", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's)")
    parser.add_argument("--rounds", type=int, default=None, help="pairs in the throughput part")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="work here (default: tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    sizes = PRESETS["smoke" if args.smoke else "default"]
    if args.rounds is not None:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    info = machine()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="zsa-bench-replica-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows: list[Row] = []
    server = SeaweedS3(work / "s3")
    try:
        server.start()
        parts = [("16a", "replica throughput", throughput), ("16b", "replica lag", lag)]
        skip = {"16a": args.skip_throughput, "16b": args.skip_lag}
        for number, title, part in parts:
            if skip[number]:
                continue
            print(f"row {number}: {title} ...", file=sys.stderr, flush=True)
            try:
                rows.append(part(server, work, sizes))
            except Exception as exc:  # one failed part must not hide the other's numbers
                rows.append(Row(number, title, error=f"{type(exc).__name__}: {exc}"))
                print(log_tail(work / "lag-daemon.log"), file=sys.stderr)
    finally:
        server.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    command = " ".join(["python -m bench.replica", *argv])
    preset = "smoke" if args.smoke else "default"
    print(f"## zoom-sms-archiver replica benchmark ({preset} sizes), {when}")
    print()
    print(f"Machine: {machine_line(info)}.")
    print(f"Command: `{command.strip()}`; {elapsed / 60:.1f} min in all.")
    print()
    print(render_table(rows))
    print()
    print(render_notes(rows))
    if args.json is not None:
        meta = {"command": command, "date": when, "machine": info, "seconds": elapsed}
        meta["sizes"] = dataclasses.asdict(sizes)
        args.json.write_text(json.dumps(as_json(rows, meta), indent=2))
    return 1 if any(row.error is not None for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
