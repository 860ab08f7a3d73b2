"""The replicator on a hand-made ROOT (lines with chosen `at`), against SeaweedFS: another
bucket, a blob named again later, old lines, a refusal, a long line, a hung upload, a resume
onto a weaker object, a slow bucket at start-up (issue 16, hostile review 2-8)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver import daemon
from archiver.config import Config
from archiver.ops.metrics import Telemetry
from archiver.replica import replicator as replicator_module
from archiver.replica import service
from archiver.replica.audit import audit_bucket
from archiver.replica.bucket import (
    BlobKey,
    ReplicaConflict,
    blob_key,
    chunk_key,
    parse_key,
    put_new,
)
from archiver.replica.replicator import Replicator
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.layout import blob_path, blob_relpath
from archiver.store.manifest import ZERO_HASH, encode_line, line_hash
from archiver.store.state import State
from tests.helpers import load, write_config
from tests.replica.rig import NO_SIM, PREFIX, list_keys, replica_section
from tests.replica.seaweed import SeaweedS3


class Hand:
    """A ROOT written line by line, each with its own `at`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "manifest").mkdir(parents=True, exist_ok=True)
        self.seq, self.prev, self.segment = 0, ZERO_HASH, 1

    def add(self, entry: dict[str, Any], at: datetime) -> None:
        self.seq += 1
        body = encode_line(entry, self.seq, self.prev, at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        self.prev = line_hash(body)
        with (self.root / "manifest" / f"{self.segment:06d}.jsonl").open("ab") as fh:
            fh.write(body + b"\n")

    def rotate(self) -> None:
        self.segment += 1
        (self.root / "manifest" / f"{self.segment:06d}.jsonl").touch()

    def attachment(self, data: bytes, at: datetime, n: int) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = blob_path(self.root, sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(data)
        entry = {
            "kind": "attachment",
            "session_id": "s",
            "message_id": f"m{n}",
            "attachment_id": f"a{n}",
            "name": "logo.png",
            "type": "image/png",
            "size": len(data),
            "sha256": sha,
            "blob": str(blob_relpath(sha)),
        }
        self.add(entry, at)
        return sha


def configure(s3: SeaweedS3, bucket: str, tmp_path: Path, days: int = 1, **kw: Any) -> Config:
    extra = replica_section(s3, bucket, tmp_path, **kw)
    extra = extra.replace("retention_days = 1", f"retention_days = {days}")
    return load(write_config(tmp_path, NO_SIM, root=tmp_path / "archive", extra=extra))


async def test_another_bucket_gets_every_blob_again(tmp_path: Path, s3: SeaweedS3) -> None:
    """The cache of keys in the bucket speaks of one bucket: pointed at another (same ROOT,
    same state), every blob goes up again (fails on ede5084: no blob at all)."""
    first = await s3.acreate_bucket("edges-first", lock=True)
    second = await s3.acreate_bucket("edges-second", lock=True)
    hand, now = Hand(tmp_path / "archive"), datetime.now(UTC)
    hand.add({"kind": "event", "event": "start"}, now)
    shas = {hand.attachment(f"file {n}".encode() * 50, now, n) for n in range(3)}
    state = State.open(hand.root)
    try:
        for bucket in (first, second):
            config = configure(s3, bucket, tmp_path)
            async with s3.client() as c:
                replicator = Replicator(
                    config.replica, hand.root, c, state=state, durable_seq=lambda: hand.seq
                )
                assert await replicator.catch_up(time.monotonic() + 60)
                keys = await list_keys(c, bucket, PREFIX)
                report = await audit_bucket(c, config)
            held = {p.sha256 for k in keys if isinstance(p := parse_key(PREFIX, k), BlobKey)}
            assert held == shas, bucket
            assert report.ok, report.problems
    finally:
        state.close()


async def test_a_blob_named_again_later_is_kept_for_the_later_line(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    """Its retention is extended before the later chunk goes up (fails on ede5084: it kept
    its first retention, 19 days short)."""
    days = 30
    config = configure(s3, locked_bucket, tmp_path, days=days)
    hand, now, logo = Hand(tmp_path / "archive"), datetime.now(UTC), b"the company logo" * 100
    hand.add({"kind": "event", "event": "start"}, now)
    sha = hand.attachment(logo, now, 1)
    async with s3.client() as c:
        replicator = Replicator(config.replica, hand.root, c, checked=False)
        await replicator.step(flush=True)
        later = now + timedelta(days=20)  # the same file sent again, twenty days on
        hand.attachment(logo, later, 2)
        await replicator.step(flush=True)
        assert replicator.stats.replicated_seq == 3
        answer = await c.get_object_retention(Bucket=locked_bucket, Key=blob_key(PREFIX, sha))
        report = await audit_bucket(c, config)
    assert answer["Retention"]["RetainUntilDate"] >= later + timedelta(days=days)
    assert report.ok, report.problems
    assert replicator.stats.uploads["retention"] == 1


async def test_lines_older_than_the_retention_still_go_up(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    """Their retain-until is now + 1 day at the least (fails on ede5084: a date in the past,
    refused, retried for ever)."""
    config = configure(s3, locked_bucket, tmp_path)
    hand, now = Hand(tmp_path / "archive"), datetime.now(UTC)
    hand.add({"kind": "event", "event": "start"}, now - timedelta(days=10))
    hand.rotate()
    hand.add({"kind": "event", "event": "today"}, now)
    async with s3.client() as c:
        replicator = Replicator(config.replica, hand.root, c, durable_seq=lambda: hand.seq)
        assert await replicator.catch_up(time.monotonic() + 60)
        key = chunk_key(PREFIX, 1, 1, 1)
        answer = await c.get_object_retention(Bucket=locked_bucket, Key=key)
    assert answer["Retention"]["RetainUntilDate"] >= now + timedelta(hours=23)


async def test_a_refusal_no_retry_fixes_stops_replication_naming_the_key(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    """A 403 on a PUT (a bucket policy denies it) is an alarm, not a retry for ever."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{locked_bucket}/{PREFIX}manifest/*"],
            }
        ],
    }
    async with s3.admin_client() as admin:
        await admin.put_bucket_policy(Bucket=locked_bucket, Policy=json.dumps(policy))
    config = configure(s3, locked_bucket, tmp_path, max_lag=0.4)
    hand = Hand(tmp_path / "archive")
    hand.add({"kind": "event", "event": "start"}, datetime.now(UTC))
    async with s3.client() as c:
        replicator = Replicator(config.replica, hand.root, c, checked=False)
        await asyncio.wait_for(replicator.run(asyncio.Event()), 60)  # it stops by itself
    stats = replicator.stats
    assert stats.stopped is not None and chunk_key(PREFIX, 1, 1, 1) in stats.stopped
    assert "refused" in stats.stopped and stats.failures["refused"] == 1
    assert "stopped" in replicator.behind()


async def test_a_line_longer_than_a_read_goes_up_as_a_chunk_of_its_own(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(fails on ede5084: nothing after the long line ever went up, and nothing said so); a
    line over LINE_MAX stops replication with an alarm."""
    monkeypatch.setattr(replicator_module, "READ_BYTES", 64 * 1024)
    config = configure(s3, locked_bucket, tmp_path, chunk_max_bytes=128 * 1024)
    hand, now = Hand(tmp_path / "archive"), datetime.now(UTC)
    hand.add({"kind": "event", "event": "start"}, now)
    hand.add({"kind": "event", "event": "big", "pad": "x" * (300 * 1024)}, now)
    for i in range(10):
        hand.add({"kind": "event", "event": "after", "i": i}, now)
    async with s3.client() as c:
        replicator = Replicator(config.replica, hand.root, c, durable_seq=lambda: hand.seq)
        assert await replicator.catch_up(time.monotonic() + 60)
        keys = await list_keys(c, locked_bucket, f"{PREFIX}manifest/")
        assert chunk_key(PREFIX, 1, 2, 2) in keys  # the long line, alone
        assert replicator.stats.replicated_seq == 12
        monkeypatch.setattr(replicator_module, "LINE_MAX", 256 * 1024)
        hand.add({"kind": "event", "event": "huge", "pad": "y" * (400 * 1024)}, now)
        assert not await replicator.catch_up(time.monotonic() + 60)
    stats = replicator.stats
    assert stats.stopped is not None and "a manifest line over" in stats.stopped
    assert stats.failures["stalled"] == 1 and stats.lines_behind == 1


async def test_a_hung_upload_shows_as_lag_and_never_holds_catch_up(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    """The figures are measured when read (fails on ede5084: 0 lines behind, /readyz ok,
    while nothing went up); catch_up returns at its deadline whatever a round does."""
    config = configure(s3, locked_bucket, tmp_path, max_lag=0.4)
    hand = Hand(tmp_path / "archive")
    hand.add({"kind": "event", "event": "start"}, datetime.now(UTC) - timedelta(seconds=30))
    loop = asyncio.get_running_loop()
    events: list[tuple[str, float]] = []  # what happened, on the loop's (monotonic) clock
    async with s3.client() as c:

        async def stalled(**kw: object) -> None:  # took the request, never answers
            events.append(("put", loop.time()))
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                events.append(("put cut off", loop.time()))
                raise

        c.put_object = stalled
        replicator = Replicator(config.replica, hand.root, c, durable_seq=lambda: hand.seq)
        deadline = time.monotonic() + 2
        # 30 s guards against a hang only: had the guard, not catch_up, cut the PUT off,
        # wait_for would raise TimeoutError here.
        assert not await asyncio.wait_for(replicator.catch_up(deadline), 30)
        events.append(("catch_up returned", loop.time()))
        # The one hung PUT was cut off at catch_up's deadline, not before, and catch_up returned
        # right after it: not held by the PUT (which never answers), not by a retry of it, nor
        # by the upload's own timeout (CALL_TIMEOUT, 60 s, past the guard's 30).
        assert [what for what, _ in events] == ["put", "put cut off", "catch_up returned"]
        assert events[1][1] >= deadline - time.get_clock_info("monotonic").resolution
        telemetry = Telemetry(poll_interval=60)
        telemetry.replica = replicator
        hand.add({"kind": "event", "event": "note"}, datetime.now(UTC))
        stats = replicator.stats
        assert stats.lines_behind == 2 and stats.replicated_seq == 0
        assert stats.lag_seconds() >= 25  # the oldest line waiting, not "caught up"
        ready, why = telemetry._replica_ready()
        assert not ready and "behind" in why
        assert stats.failures["deadline"] == 1


async def test_a_resume_onto_a_weaker_or_unhashed_object_is_a_conflict(
    tmp_path: Path, s3: SeaweedS3, locked_bucket: str
) -> None:
    """A 412 is an idempotent resume only when the object there is ours: its bytes (read
    back when the server keeps no whole-object SHA-256, not the x-amz-meta-sha256 it claims)
    and a lock as strong, as long (fails on ede5084: both accepted)."""
    body = b'{"line": 1}\n'
    sha = hashlib.sha256(body).hexdigest()
    until = datetime.now(UTC) + timedelta(days=2)
    weak, forged = f"{PREFIX}weak", f"{PREFIX}forged"
    async with s3.admin_client() as admin:
        await admin.put_object(
            Bucket=locked_bucket,
            Key=weak,
            Body=body,
            ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(hours=1),
        )
        other = b'{"line": 2}\n'  # same size, claims our SHA-256, no server checksum
        await admin.put_object(
            Bucket=locked_bucket, Key=forged, Body=other, Metadata={"sha256": sha}
        )
    async with s3.client() as c:
        with pytest.raises(ReplicaConflict, match="weaker than COMPLIANCE"):
            await put_new(c, locked_bucket, weak, body, mode="COMPLIANCE", until=until)
        with pytest.raises(ReplicaConflict, match="SHA-256 differs"):
            await put_new(c, locked_bucket, forged, body, mode="none", until=None)
        with pytest.raises(ReplicaConflict, match="policy wants"):
            await put_new(
                c, locked_bucket, weak, body, mode="GOVERNANCE", until=until, min_until=until
            )


@dataclasses.dataclass
class Trickle:
    url: str
    asked: int = 0  # requests read
    answered: int = 0  # answers sent whole (each would take 10,000 s)


@contextlib.asynccontextmanager
async def trickle() -> AsyncIterator[Trickle]:
    """A loopback 'S3' that answers a byte every second: no socket read ever times out."""
    slow = Trickle("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            slow.asked += 1
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
            slow.answered += 1

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    slow.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield slow
    finally:
        server.close()


def archived_messages(root: Path) -> int:
    return sum(
        json.loads(line)["kind"] == "message"
        for segment in sorted((root / "manifest").glob("*.jsonl"))
        for line in segment.read_bytes().splitlines()
        if line.strip()
    )


@pytest.mark.whole_run
async def test_a_slow_bucket_never_keeps_the_daemon_from_archiving(
    tmp_path: Path, s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up check has a total deadline (CHECK_TIMEOUT, 2 s here): past it the bucket
    is "unreachable now" and ROOT opens (fails on ede5084: still in the check for ever)."""
    monkeypatch.setattr(service, "CHECK_TIMEOUT", 2.0)
    sim_config = SimulatorConfig(seed=5, sessions=2, history_days=5, attachment_probability=0)
    async with Simulator(sim_config) as sim, trickle() as slow:
        extra = replica_section(s3, "slow", tmp_path).replace(s3.endpoint_url, slow.url)
        config = load(write_config(tmp_path, sim, extra=extra))
        stop = asyncio.Event()
        run = asyncio.create_task(daemon.run(config, once=False, stop=stop))
        try:
            archived = 0
            for _ in range(600):  # 60 s: a guard against a hang, not a measure
                if (config.root / "manifest").is_dir():
                    archived = archived_messages(config.root)
                if archived or run.done():
                    break
                await asyncio.sleep(0.1)
            # Messages reached the manifest while the bucket held the start-up check's request
            # unanswered (a whole answer takes 10,000 s): the check asked the slow bucket, and
            # archiving did not wait for it.
            assert archived > 0, "no message was archived"
            assert slow.asked >= 1 and slow.answered == 0, slow
        finally:
            stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run), 30)
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
