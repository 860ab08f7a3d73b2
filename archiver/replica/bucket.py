"""The bucket: key layout, the S3 client, never-overwriting PUTs, and the start-up check.

The one module that speaks S3 for the replica (its replicator, `replica verify`, `restore`
and `legal-hold` build on it). Public surface:

Keys (pure; `prefix` is `replica.prefix`, e.g. "acme/"):
- `chunk_key(prefix, segment, first, last)`
  -> `{prefix}manifest/000001/000000000001-000000000042.jsonl`
- `blob_key(prefix, sha256_hex)` -> `{prefix}blobs/sha256/ab/<hex>` (the local relpath)
- `checkpoint_key(prefix, seq)` -> `{prefix}checkpoints/000000000042.note` (the local name)
- `parse_key(prefix, key)` -> `ChunkKey | BlobKey | CheckpointKey | None` (None: not ours)
- `retain_until(at, retention_days)` -> `at + retention_days + 1 day` (clock margin), and
  never less than now + 1 day (a date in the past is refused by S3: old lines still go up)

Client:
- `open_client(config, secret)` -> async context manager yielding an aiobotocore S3 client:
  path-style, `request_checksum_calculation="when_required"` (so it adds no checksum we did
  not ask for), no botocore retries (callers retry with their own backoff).
- `replica_client(config, environ=None)`: the same with the secret read by the secret-file
  rules (`archiver.config.read_s3_secret`).

Writes:
- `put_new(s3, bucket, key, body, *, mode, retain_until)` -> `PutOutcome.CREATED` or
  `PutOutcome.ALREADY_THERE` (resumed: the object at `key` has our bytes). PUT with
  `If-None-Match: *`, Content-MD5 and `x-amz-checksum-sha256`, the lock mode and
  RetainUntilDate (none when `mode` is "none"), and `x-amz-meta-sha256` (hex). On 412 the
  existing object is compared (size and SHA-256); different bytes raise `ReplicaConflict`
  naming the key.
- `put_new_body(s3, bucket, key, body, *, size, md5, sha256, mode, until, content_type)`: the
  same for a body whose digests the caller computed (a file streamed from disk, upload.py).
- `existing_matches(s3, bucket, key, size, sha256_hex, *, mode=, min_until=)` -> bool,
  raising `ReplicaConflict` when the object is there with other bytes, or with a weaker lock
  than `mode` or a retain-until before `min_until`; False when absent. An object without a
  whole-object server checksum (multipart) is read back and hashed (bounded memory).
- `lock_args(mode, retain_until)` -> the lock keyword arguments for a PUT or a multipart start.

Checks:
- `check_bucket(s3, config)` -> list of warnings; raises `ReplicaBucketError` (exit 2, the
  message says the fix) for a refused credential, a missing bucket, Object Lock off, or
  versioning off (unless `lock_mode = "none"`), and a server clock more than 15 min off.
  Warnings: a bucket default retention, a clock more than 60 s off.
- `describe(exc)` -> a short reason for a failed call (for logs and metrics: the S3 error
  code or the exception's type, never a URL with a signature).

Errors (all `ReplicaError`, an `ArchiverError`): `ReplicaBucketError` (also `ConfigError`:
exit 2), `ReplicaConflict` (an object at one of our keys has other bytes: replication stops),
`ReplicaRefused` (a ReplicaConflict: the bucket refused a request for good, a 4xx that is no
412/409 and not transient: retrying cannot help, replication stops naming the key).
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from archiver.config import Config, ReplicaConfig, Secret, read_s3_secret
from archiver.errors import ArchiverError, ConfigError
from archiver.ops.logs import register_secret
from archiver.store.manifest import is_hex_digest

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
else:
    S3Client = Any

CLOCK_WARN: Final = timedelta(seconds=60)
CLOCK_ERROR: Final = timedelta(minutes=15)
CLOCK_MARGIN: Final = timedelta(days=1)
SHA256_META: Final = "sha256"  # x-amz-meta-sha256: the object's SHA-256, hex

_CHUNK: Final = re.compile(r"manifest/(\d{6})/(\d{12})-(\d{12})\.jsonl")
_BLOB: Final = re.compile(r"blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})")
_CHECKPOINT: Final = re.compile(r"checkpoints/(\d{12})\.note")


class ReplicaError(ArchiverError):
    """Something about the replica bucket."""


class ReplicaBucketError(ReplicaError, ConfigError):
    """The bucket cannot be used as configured; the message says what to fix (exit 2)."""


class ReplicaConflict(ReplicaError):
    """An object at one of our keys holds other bytes than ours: replication stops."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(
            f"the bucket already holds {key} with other bytes ({detail}); replication stopped: "
            "find out who wrote it (the bucket's versions and access logs) before going on"
        )


class ReplicaRefused(ReplicaConflict):
    """The bucket refused a request on one of our keys for good (a 4xx that no retry fixes)."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        ReplicaError.__init__(
            self,
            f"the bucket refused {key} ({detail}); replication stopped (a retry would get the "
            "same answer): fix the cause (the bucket policy, the credentials, the lock "
            "settings) and restart the daemon",
        )


def refusal(exc: BaseException) -> bool:
    """A 4xx that is not 412/409 (resume) and not worth a retry (408, 429, slow-downs)."""
    status = status_of(exc) or 0
    return 400 <= status < 500 and status not in (409, 412) and not is_transient(exc)


@contextlib.contextmanager
def refusals(key: str) -> Iterator[None]:
    """Turn a final refusal of a request on `key` into ReplicaRefused naming it."""
    try:
        yield
    except ClientError as exc:
        if refusal(exc):
            raise ReplicaRefused(key, describe(exc)) from None
        raise


class PutOutcome(enum.Enum):
    CREATED = "created"
    ALREADY_THERE = "already_there"


# --- keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkKey:
    segment: int
    first: int
    last: int


@dataclass(frozen=True)
class BlobKey:
    sha256: str


@dataclass(frozen=True)
class CheckpointKey:
    seq: int


def chunk_key(prefix: str, segment: int, first: int, last: int) -> str:
    if not 1 <= first <= last or segment < 1:
        raise ValueError(f"bad chunk: segment {segment}, seq {first}..{last}")
    return f"{prefix}manifest/{segment:06d}/{first:012d}-{last:012d}.jsonl"


def blob_key(prefix: str, sha256_hex: str) -> str:
    if not is_hex_digest(sha256_hex):
        raise ValueError("a blob is named by a lowercase 64-digit SHA-256 hex digest")
    return f"{prefix}blobs/sha256/{sha256_hex[:2]}/{sha256_hex}"


def checkpoint_key(prefix: str, seq: int) -> str:
    if seq < 1:
        raise ValueError(f"checkpoint seq starts at 1, not {seq}")
    return f"{prefix}checkpoints/{seq:012d}.note"


def parse_key(prefix: str, key: str) -> ChunkKey | BlobKey | CheckpointKey | None:
    """What one of our keys names; None for anything else (not under prefix, other shapes)."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if m := _CHUNK.fullmatch(rest):
        segment, first, last = (int(g) for g in m.groups())
        return ChunkKey(segment, first, last) if 1 <= first <= last and segment >= 1 else None
    if (m := _BLOB.fullmatch(rest)) and m.group(2).startswith(m.group(1)):
        return BlobKey(m.group(2))
    if (m := _CHECKPOINT.fullmatch(rest)) and int(m.group(1)) >= 1:
        return CheckpointKey(int(m.group(1)))
    return None


def retain_until(at: datetime, retention_days: int, now: datetime | None = None) -> datetime:
    """When an object written for a line archived `at` may go: policy plus a day of margin
    for the clocks of this machine and the bucket's; and never before `now` + that day (a
    line older than the retention still goes up: S3 refuses a retain-until in the past)."""
    if at.tzinfo is None:
        raise ValueError("naive datetime")
    floor = (now or datetime.now(UTC)).astimezone(UTC) + CLOCK_MARGIN
    return max(at.astimezone(UTC) + timedelta(days=retention_days) + CLOCK_MARGIN, floor)


def policy_until(at: datetime, retention_days: int) -> datetime:
    """The least retain-until policy allows for a line archived `at` (no margin)."""
    return at.astimezone(UTC) + timedelta(days=retention_days)


def lock_args(mode: str, until: datetime | None) -> dict[str, Any]:
    if mode == "none":
        return {}
    if until is None:
        raise ValueError("a locked object needs a retain-until date")
    return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": until}


# --- client --------------------------------------------------------------------------------


def client_config() -> AioConfig:
    return AioConfig(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
    )


@contextlib.asynccontextmanager
async def open_client(config: ReplicaConfig, secret: Secret) -> AsyncIterator[S3Client]:
    register_secret(secret.reveal())  # never in a log line, whatever botocore says
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=config.endpoint_url or None,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=secret.reveal(),
        config=client_config(),
    ) as s3:
        yield s3


@contextlib.asynccontextmanager
async def replica_client(
    config: Config, environ: Mapping[str, str] | None = None
) -> AsyncIterator[S3Client]:
    async with open_client(config.replica, read_s3_secret(config, environ)) as s3:
        yield s3


def describe(exc: BaseException) -> str:
    """A short, secret-free reason: the S3 error code, or the exception type."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(error.get("Code") or status or "ClientError")
    return type(exc).__name__


# S3 error codes worth a label of their own; any other code an endpoint (or a proxy in front of
# it) invents is counted by its HTTP status class, so a metric label never takes a value the
# far side chose (the raw code stays in the log line).
KNOWN_CODES: Final = frozenset(
    {
        "AccessDenied",
        "BadDigest",
        "EntityTooLarge",
        "InternalError",
        "InvalidAccessKeyId",
        "InvalidArgument",
        "InvalidBucketState",
        "InvalidObjectState",
        "InvalidRequest",
        "InvalidRetentionPeriod",
        "NoSuchBucket",
        "NoSuchKey",
        "NoSuchUpload",
        "ObjectLockConfigurationNotFoundError",
        "PreconditionFailed",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "ServiceUnavailable",
        "SignatureDoesNotMatch",
        "SlowDown",
        "XAmzContentSHA256Mismatch",
    }
)


def failure_label(exc: BaseException) -> str:
    """A metric label for a failed call, from a fixed set: a known S3 code, `http_4xx` /
    `http_5xx` / `http_other`, `timeout`, `connection`, or `other`."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        if code in KNOWN_CODES:
            return str(code)
        status = status_of(exc)
        if status is not None and 400 <= status < 600:
            return f"http_{status // 100}xx"
        return "http_other"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError | aiohttp.ClientError | BotoCoreError):
        return "connection"
    return "other"


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


# --- writes --------------------------------------------------------------------------------


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


async def put_new(
    s3: S3Client,
    bucket: str,
    key: str,
    body: bytes,
    *,
    mode: str,
    until: datetime | None,
    content_type: str = "application/octet-stream",
    min_until: datetime | None = None,
) -> PutOutcome:
    """PUT `body` at `key` unless something is there already (see the module docstring)."""
    return await put_new_body(
        s3,
        bucket,
        key,
        body,
        size=len(body),
        md5=hashlib.md5(body, usedforsecurity=False).digest(),
        sha256=hashlib.sha256(body).digest(),
        mode=mode,
        until=until,
        content_type=content_type,
        min_until=min_until,
    )


async def put_new_body(
    s3: S3Client,
    bucket: str,
    key: str,
    body: Any,  # bytes, or a streaming body botocore can read (upload.FileSlice)
    *,
    size: int,
    md5: bytes,
    sha256: bytes,
    mode: str,
    until: datetime | None,
    content_type: str = "application/octet-stream",
    min_until: datetime | None = None,
) -> PutOutcome:
    """`put_new` for a body whose size and digests (raw bytes) the caller computed. On a 412
    the existing object must also be locked at least as `mode`, to `min_until` or later."""
    try:
        await s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            IfNoneMatch="*",
            ContentMD5=b64(md5),
            ChecksumSHA256=b64(sha256),
            ContentType=content_type,
            Metadata={SHA256_META: sha256.hex()},
            **lock_args(mode, until),
        )
    except ClientError as exc:
        # 409 ConditionalRequestConflict: a concurrent PUT of the same key won; compare too.
        if status_of(exc) not in (412, 409):
            raise
        if await existing_matches(
            s3, bucket, key, size, sha256.hex(), mode=mode, min_until=min_until
        ):
            return PutOutcome.ALREADY_THERE
        raise  # 412 but gone again (deleted between the two calls): let the caller retry
    return PutOutcome.CREATED


async def existing_matches(
    s3: S3Client,
    bucket: str,
    key: str,
    size: int,
    sha256_hex: str,
    *,
    mode: str = "none",
    min_until: datetime | None = None,
) -> bool:
    """True when `key` holds exactly these bytes, locked at least as `mode` until
    `min_until`; False when absent; ReplicaConflict else. Without a whole-object SHA-256
    from the server (a multipart object's is per part) the object is read and hashed: the
    x-amz-meta-sha256 it carries is only what its writer claimed."""
    try:
        head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if status_of(exc) == 404:
            return False
        raise
    if head.get("ContentLength") != size:
        raise ReplicaConflict(key, f"{head.get('ContentLength')} bytes, not {size}")
    checksum = head.get("ChecksumSHA256")
    if checksum and "-" not in checksum:  # a composite (multipart) checksum is per part
        if checksum != b64(bytes.fromhex(sha256_hex)):
            raise ReplicaConflict(key, "its SHA-256 differs")
    elif await _read_sha256(s3, bucket, key, head.get("VersionId")) != sha256_hex:
        raise ReplicaConflict(key, "its SHA-256 differs (read back)")
    _check_lock(key, dict(head), mode, min_until)
    return True


_STRENGTH: Final = {"none": 0, "GOVERNANCE": 1, "COMPLIANCE": 2}


def _check_lock(key: str, head: dict[str, Any], mode: str, min_until: datetime | None) -> None:
    """An object of ours found in place (a resume) must be locked as we would have locked it."""
    if mode == "none":
        return
    found = str(head.get("ObjectLockMode") or "none")
    if _STRENGTH.get(found, 0) < _STRENGTH.get(mode, 0):
        raise ReplicaConflict(key, f"lock mode {found}, weaker than {mode}")
    until = head.get("ObjectLockRetainUntilDate")
    if min_until is not None and (until is None or until < min_until):
        shown = f"{until:%Y-%m-%dT%H:%M:%SZ}" if until else "no date"
        raise ReplicaConflict(
            key, f"retained until {shown}, policy wants {min_until:%Y-%m-%dT%H:%M:%SZ}"
        )


async def _read_sha256(s3: S3Client, bucket: str, key: str, version: str | None) -> str:
    args: dict[str, Any] = {"VersionId": version} if version else {}
    answer = await s3.get_object(Bucket=bucket, Key=key, **args)
    digest = hashlib.sha256()
    async with answer["Body"] as body:
        while block := await body.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


# --- start-up check ------------------------------------------------------------------------


async def check_bucket(s3: S3Client, config: ReplicaConfig) -> list[str]:
    """Refuse a bucket that cannot hold WORM records; return warnings for the doubtful."""
    bucket = config.bucket
    warnings: list[str] = []
    try:
        head = await s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = status_of(exc)
        if status == 404:
            raise ReplicaBucketError(
                f"bucket {bucket!r} does not exist at {config.endpoint_url or 'AWS'} "
                f"({config.region}); create it with Object Lock on (deploy/README.md)",
                key="replica.bucket",
            ) from None
        if status in (401, 403):
            raise ReplicaBucketError(
                f"the bucket refused the credentials ({describe(exc)}): check "
                "replica.access_key_id and the secret access key, and that the IAM policy "
                f"grants s3:ListBucket on {bucket!r} (deploy/README.md)",
                key="replica.access_key_id",
            ) from None
        raise
    warnings += _clock_skew(head.get("ResponseMetadata", {}).get("HTTPHeaders", {}))
    if config.lock_mode == "none":
        return warnings
    try:
        lock = await s3.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        if describe(exc) not in (
            "ObjectLockConfigurationNotFoundError",
            "NoSuchObjectLockConfiguration",
        ):
            raise
        raise ReplicaBucketError(
            f"bucket {bucket!r} has no Object Lock, so its objects could be rewritten or erased: "
            "create a new bucket with Object Lock enabled (most providers allow it only at "
            'creation; deploy/README.md), or set replica.lock_mode = "none" for a plain '
            "disaster-recovery copy without WORM",
            key="replica.bucket",
        ) from None
    conf = lock.get("ObjectLockConfiguration", {})
    if conf.get("ObjectLockEnabled") != "Enabled":
        raise ReplicaBucketError(
            f"bucket {bucket!r}: Object Lock is not enabled; enable it (deploy/README.md)",
            key="replica.bucket",
        )
    versioning = await s3.get_bucket_versioning(Bucket=bucket)
    if versioning.get("Status") != "Enabled":
        raise ReplicaBucketError(
            f"bucket {bucket!r}: versioning is {versioning.get('Status', 'off')}, and Object Lock "
            "needs it on: enable versioning on the bucket (deploy/README.md)",
            key="replica.bucket",
        )
    default = conf.get("Rule", {}).get("DefaultRetention")
    if default:
        warnings.append(
            f"bucket {bucket!r} has a default retention ({default.get('Mode')}, "
            f"{default.get('Days') or default.get('Years')} "
            f"{'days' if default.get('Days') else 'years'}); it applies to objects the archiver "
            "did not lock itself and fights the per-object retention: remove it "
            "(deploy/README.md)"
        )
    return warnings


def _clock_skew(headers: Mapping[str, str], now: datetime | None = None) -> list[str]:
    date = headers.get("date") or headers.get("Date")
    if not date:
        return []
    try:
        server = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return []
    return clock_skew_findings(server, now or datetime.now(UTC))


def clock_skew_findings(server: datetime, local: datetime) -> list[str]:
    """Warnings for a skew over 60 s; ReplicaBucketError over 15 min (retention dates and
    SigV4 both depend on the clocks agreeing)."""
    skew = abs(server - local)
    text = f"the bucket's clock is {skew.total_seconds():.0f} s off this machine's"
    if skew > CLOCK_ERROR:
        raise ReplicaBucketError(
            f"{text} (more than 15 min): fix this machine's time (systemd-timesyncd, chrony) "
            "before replicating: retention dates would be wrong",
            key="replica.endpoint_url",
        )
    if skew > CLOCK_WARN:
        return [f"{text}: check NTP on this machine"]
    return []


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: the network, a timeout, a 5xx, a 429/503 slow-down."""
    if isinstance(exc, ClientError):
        status = status_of(exc) or 0
        return (
            status >= 500 or status in (408, 429) or describe(exc) in ("SlowDown", "RequestTimeout")
        )
    return isinstance(exc, BotoCoreError | OSError | TimeoutError)
