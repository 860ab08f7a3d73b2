"""Fixtures for the replica tests: one SeaweedFS per session, a fresh bucket per test.

`s3` is the shared server (started once; a test must not stop it). A test that stops the
server (the outage test) takes `own_s3` instead: a server of its own, stopped at the end.
`locked_bucket` has Object Lock (so versioning); `plain_bucket` has neither (the refusal test).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

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
