"""Fixtures for the replica tests: one SeaweedFS per session, a fresh bucket per test.

`s3` is the shared server (started once; a test must not stop it). A test that stops the
server (the outage test) takes `own_s3` instead: a server of its own, stopped at the end.
`locked_bucket` has Object Lock (so versioning); `plain_bucket` has neither (the refusal test).
`replicated`: one real run replicated into a GOVERNANCE bucket (signed checkpoints,
attachments, several chunks), built once per session; tests damage copies of it (rig.clone).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver import daemon
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store import checkpoint
from tests.helpers import load, write_config
from tests.replica.rig import Replicated, replica_section
from tests.replica.seaweed import SeaweedS3

_names = itertools.count(1)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path / "seaweed")
    server.start()
    try:
        yield server
    finally:
        server.close()


def _bucket_name(request: pytest.FixtureRequest, kind: str) -> str:
    # S3 names: 3..63 of [a-z0-9-]; unique per test so tests never see each other's objects.
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    return f"{kind}-{next(_names)}-{stem}".strip("-")[:63].rstrip("-")


@pytest.fixture
def locked_bucket(s3: SeaweedS3, request: pytest.FixtureRequest) -> str:
    return s3.create_bucket(_bucket_name(request, "lock"), lock=True)


@pytest.fixture
def plain_bucket(s3: SeaweedS3, request: pytest.FixtureRequest) -> str:
    return s3.create_bucket(_bucket_name(request, "plain"), lock=False)


@pytest.fixture(scope="session")
def replicated(s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Replicated:
    """One `run --once` (signed checkpoints, attachments, several chunks) into a GOVERNANCE
    bucket; the tests damage copies of it, never this one."""
    base = tmp_path_factory.mktemp("audit")
    bucket = s3.create_bucket("audit-source", lock=True)
    key, pub = checkpoint.generate_keypair(base / "keys")
    sim_config = SimulatorConfig(
        seed=5, sessions=12, history_days=60, attachment_probability=0.3,
        max_attachment_bytes=4096,
    )  # fmt: skip

    async def build() -> None:
        async with Simulator(sim_config) as sim:
            extra = replica_section(s3, bucket, base, lock_mode="GOVERNANCE", chunk_max_bytes=65536)
            path = write_config(base, sim, extra=extra)
            root = base / "archive"
            path.write_text(
                path.read_text().replace(
                    f'root = "{root}"\n', f'root = "{root}"\nsigning_key_file = "{key}"\n'
                )
            )
            outcome = await daemon.run(load(path), once=True)
            assert outcome.ok, outcome.summary()

    asyncio.run(build())
    return Replicated(base / "archive", bucket, pub, base)
