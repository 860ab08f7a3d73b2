"""`restore`: rebuild a complete ROOT from the bucket into an empty (or absent) folder.

Segments are the chunks of each segment concatenated in seq order, so they come back byte
for byte; with `upto` the chunk holding that seq is cut after its line (never inside one).
Blobs stream through a SHA-256 into tmp/ and are renamed into blobs/ only when they hash to
their name (memory holds one read, whatever the blob's size). Checkpoints up to the last
restored seq follow. No state file: the daemon rebuilds it from the manifest at its first
start. Then `verify` runs on the result (with the same `--trust`); its verdict is the
command's.

The bucket is read by version, never as "its latest view": a WORM key has one version and no
delete marker, and anything else (a rewrite by a plain PUT, which Object Lock does not stop:
it only adds a version; a delete marker hiding a chunk) is refused, naming the keys, before a
byte is written. `oldest_versions` takes each key's oldest version instead (the original the
lock kept), and says how many keys had more. Before writing, the bucket audit runs (without
the local comparison) and any problem refuses the restore; so does a checkpoint beyond the
last chunk (chunks were removed from the end: the archive would come back shorter) unless
`upto` cuts there knowingly, and then the later checkpoints are kept aside in
recovered/checkpoints/ and counted. A gap in the chunks stops the restore: a segment after a
gap would not be the archive's.

A restore that stops mid-way leaves INCOMPLETE_MARKER in the folder: it is not an archive,
and the next restore refuses it like any non-empty folder (the message says to delete it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from archiver.config import Config
from archiver.errors import ArchiverError, ConfigError
from archiver.replica.audit import Bar, audit_bucket
from archiver.replica.bucket import (
    BlobKey,
    CheckpointKey,
    ChunkKey,
    blob_key,
    parse_key,
    status_of,
)
from archiver.store import checkpoint
from archiver.store.layout import (
    BLOBS_DIR,
    CHECKPOINTS_DIR,
    MANIFEST_DIR,
    RECOVERED_DIR,
    TMP_DIR,
    blob_path,
    fsync_dir,
    segment_path,
)
from archiver.store.manifest import is_hex_digest, parse_line

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from types_aiobotocore_s3 import S3Client

READ_BYTES: Final = 1024 * 1024
_SEGMENT_MODE: Final = 0o640  # as the writer's segments (store/segments.py)
_BLOB_MODE: Final = 0o444  # as downloads/blobs.py


class RestoreError(ArchiverError):
    """The bucket cannot give back a whole archive; the message says what is missing."""


INCOMPLETE_MARKER: Final = "RESTORE-INCOMPLETE"
SHOWN: Final = 10  # keys or problems named in a refusal (`replica verify` lists them all)
_VERSION_KINDS: Final = ("delete_marker", "second_version")


@dataclass
class Restored:
    segments: int = 0
    lines: int = 0
    last_seq: int = 0
    blobs: int = 0
    checkpoints: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the operator must know (said)
    recovered: int = 0  # checkpoints beyond --upto, kept in recovered/checkpoints/


@dataclass
class _Entry:
    """One of our keys in the bucket, by version."""

    version: str = ""  # the version restore reads ("" when every entry is a delete marker)
    size: int = 0
    versions: int = 0
    markers: int = 0


def check_target(target: Path) -> None:
    """An absent or empty folder; anything else is refused before the bucket is read."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ConfigError(f"--to {target}: not a folder; give an empty or absent folder")
    if (target / INCOMPLETE_MARKER).exists():
        raise ConfigError(
            f"--to {target} holds a restore that stopped mid-way ({INCOMPLETE_MARKER}): it is "
            "not an archive; delete the folder (rm -r) and run restore again"
        )
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(
            f"--to {target} is not empty: restore writes only into an empty or absent folder "
            "(it never mixes with an archive; move the contents away or give another folder)"
        )


async def restore(
    s3: S3Client,
    config: Config,
    target: Path,
    *,
    upto: int | None = None,
    trust: Sequence[Ed25519PublicKey] = (),
    oldest_versions: bool = False,
) -> Restored:
    check_target(target)
    bucket, prefix = config.replica.bucket, config.replica.prefix
    done = Restored()
    entries = await _listing(s3, bucket, prefix, oldest=oldest_versions)
    _refuse_versions(entries, bucket, prefix, upto=upto, oldest=oldest_versions, done=done)
    chunks, notes, sizes = _plan(entries, prefix, upto)
    chunks.sort(key=lambda c: (c[0].segment, c[0].first))
    _contiguous([c[0] for c in chunks], bucket, prefix)
    if not chunks:
        raise RestoreError(f"bucket {bucket!r} holds no manifest chunk under {prefix!r}")
    head = min(chunks[-1][0].last, upto) if upto is not None else chunks[-1][0].last
    beyond = [key for seq, key in notes if seq > head]
    knowingly = upto is not None and head == upto
    if beyond and not knowingly:
        raise RestoreError(
            f"bucket {bucket!r}: {len(beyond)} checkpoint(s) sign seq beyond its last chunk "
            f"(seq {head}): {_names(beyond)}: chunks were removed from its end, so the archive "
            f"would come back shorter; run `replica verify` to see what is missing, or "
            f"`restore --upto {head}` to restore what is there (the later checkpoints are then "
            "kept aside in recovered/checkpoints/)"
        )
    await _audit(s3, config, trust=trust, upto=upto, oldest=oldest_versions)
    marker = _begin(target)
    total = sum(size for _, _, size in chunks)
    with Bar("manifest", total, "bytes") as bar:
        wanted = await _segments(s3, bucket, target, chunks, entries, upto=upto, done=done, bar=bar)
    with Bar("blobs", sum(sizes.get(sha, 0) for sha in wanted), "bytes") as bar:
        for sha in wanted:
            await _blob(s3, bucket, prefix, target, sha, entries, done=done, bar=bar)
    orphans = len(set(sizes) - set(wanted))
    if orphans and upto is None:
        done.notes.append(
            f"{orphans} blob(s) in the bucket are named by no restored line (uploaded before "
            "their chunk, which never followed): not restored"
        )
    await _checkpoints(s3, bucket, target, notes, entries, done=done)
    for sub in (MANIFEST_DIR, CHECKPOINTS_DIR, "blobs", ""):
        fsync_dir(target / sub)
    marker.unlink()
    fsync_dir(target)
    return done


def _begin(target: Path) -> Path:
    """The folder, marked incomplete first (removed once the restore is whole)."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker = target / INCOMPLETE_MARKER
    marker.write_text("a restore is under way or stopped mid-way: this is not an archive\n")
    for sub in (MANIFEST_DIR, BLOBS_DIR, TMP_DIR, CHECKPOINTS_DIR):
        (target / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    return marker


def _plan(
    entries: dict[str, _Entry], prefix: str, upto: int | None
) -> tuple[list[tuple[ChunkKey, str, int]], list[tuple[int, str]], dict[str, int]]:
    """The chunks to read (key order: sorted by the caller), the checkpoints, blob sizes."""
    chunks: list[tuple[ChunkKey, str, int]] = []
    notes: list[tuple[int, str]] = []
    sizes: dict[str, int] = {}
    for key, entry in sorted(entries.items()):
        parsed = parse_key(prefix, key)
        if not entry.version:
            continue  # only delete markers: nothing to read (refused unless oldest_versions)
        if isinstance(parsed, ChunkKey) and (upto is None or parsed.first <= upto):
            chunks.append((parsed, key, entry.size))
        elif isinstance(parsed, CheckpointKey):
            notes.append((parsed.seq, key))
        elif isinstance(parsed, BlobKey):
            sizes[parsed.sha256] = entry.size
    return chunks, sorted(notes), sizes


async def _checkpoints(
    s3: S3Client,
    bucket: str,
    target: Path,
    notes: list[tuple[int, str]],
    entries: dict[str, _Entry],
    *,
    done: Restored,
) -> None:
    """Notes up to the last restored seq into checkpoints/; later ones (only with --upto, at
    its seq: else refused) aside into recovered/checkpoints/."""
    for seq, key in notes:
        note = await _read(s3, bucket, key, entries[key].version)
        if seq <= done.last_seq:
            checkpoint.write_note(target, seq, note)
            done.checkpoints += 1
        else:
            _keep_aside(target, key, note)
            done.recovered += 1
    if done.recovered:
        done.notes.append(
            f"{done.recovered} checkpoint(s) beyond seq {done.last_seq} (--upto) kept aside in "
            f"{target / RECOVERED_DIR / 'checkpoints'}: they sign lines not restored"
        )


async def _listing(s3: S3Client, bucket: str, prefix: str, *, oldest: bool) -> dict[str, _Entry]:
    """Our keys by version: the version to read is the latest, or with `oldest` the oldest
    (a listing gives each key's versions newest first)."""
    entries: dict[str, _Entry] = {}
    paginator = s3.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            key = version.get("Key", "")
            if parse_key(prefix, key) is None:
                continue
            entry = entries.setdefault(key, _Entry())
            entry.versions += 1
            if (oldest or version.get("IsLatest")) and version.get("VersionId"):
                entry.version, entry.size = version["VersionId"], version.get("Size", 0)
        for marker in page.get("DeleteMarkers", []):
            key = marker.get("Key", "")
            if parse_key(prefix, key) is not None:
                entries.setdefault(key, _Entry()).markers += 1
    return entries


def _beyond(prefix: str, key: str, upto: int | None) -> bool:
    """A key (or `key:line`) that names only lines after `upto`."""
    if upto is None:
        return False
    name, _, line = key.rpartition(":")  # a finding names a line as `key:lineno`
    parsed = parse_key(prefix, name if name and line.isdigit() else key)
    if isinstance(parsed, ChunkKey):
        return parsed.first > upto
    if isinstance(parsed, CheckpointKey):
        return parsed.seq > upto
    return False


def _refuse_versions(
    entries: dict[str, _Entry],
    bucket: str,
    prefix: str,
    *,
    upto: int | None,
    oldest: bool,
    done: Restored,
) -> None:
    rewritten = sorted(
        key
        for key, entry in entries.items()
        if (entry.versions > 1 or entry.markers) and not _beyond(prefix, key, upto)
    )
    if not rewritten:
        return
    if not oldest:
        raise RestoreError(
            f"bucket {bucket!r}: {len(rewritten)} key(s) have more than one version or a delete "
            f"marker: {_names(rewritten)}: the bucket was written to or deleted from after "
            "replication, and its latest view is not the archive; run `replica verify` to "
            "see them all; the oldest version of each is the original the lock kept: "
            "`restore --oldest-versions` restores those"
        )
    done.notes.append(
        f"--oldest-versions: took the oldest version of {len(rewritten)} key(s) that have "
        f"more than one version or a delete marker ({_names(rewritten)})"
    )


async def _audit(
    s3: S3Client,
    config: Config,
    *,
    trust: Sequence[Ed25519PublicKey],
    upto: int | None,
    oldest: bool,
) -> None:
    """The bucket audit (chain, blobs' sizes, locks, checkpoints with `trust`); any problem,
    but those past `upto` and the versions `oldest` takes knowingly, refuses the restore.
    Blobs are hashed as they come down, so the audit re-hashes none."""
    report = await audit_bucket(s3, config, sample_pct=0.0, trust=trust, local=False, oldest=oldest)
    prefix = config.replica.prefix
    problems = [
        f"{p.key} {p.kind}: {p.detail}"
        for p in report.problems
        if not (oldest and p.kind in _VERSION_KINDS) and not _beyond(prefix, p.key, upto)
    ]
    if problems or report.problems_omitted:
        shown = "; ".join(problems[:SHOWN])
        more = len(problems) - SHOWN + report.problems_omitted
        raise RestoreError(
            f"bucket {config.replica.bucket!r}: the audit found {len(problems)} problem(s): "
            f"{shown}{f'; and {more} more' if more > 0 else ''}: nothing was restored; run "
            "`replica verify` to see them all, or `restore --upto SEQ` to restore the lines "
            "before the damage"
        )


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def _keep_aside(target: Path, key: str, note: bytes) -> None:
    directory = target / RECOVERED_DIR / "checkpoints"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / key.rsplit("/", 1)[-1]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        _write_all(fd, note)
        os.fsync(fd)
    finally:
        os.close(fd)


def _contiguous(chunks: list[ChunkKey], bucket: str, prefix: str) -> None:
    seq = 0
    for chunk in chunks:
        if chunk.first != seq + 1:
            advice = f"restore --upto {seq}" if seq else "nothing before it can be restored"
            raise RestoreError(
                f"bucket {bucket!r}: seq {seq + 1}..{chunk.first - 1} are in no chunk under "
                f"{prefix}manifest/ (before segment {chunk.segment}): the bucket cannot give "
                f"a whole archive past seq {seq}; run `replica verify` to see what is "
                f"damaged, or {advice}"
            )
        seq = chunk.last


async def _segments(
    s3: S3Client,
    bucket: str,
    target: Path,
    chunks: list[tuple[ChunkKey, str, int]],
    entries: dict[str, _Entry],
    *,
    upto: int | None,
    done: Restored,
    bar: Bar,
) -> dict[str, None]:
    """Write each segment; return the blobs its attachment lines name, in order."""
    wanted: dict[str, None] = {}
    current: int | None = None
    fd = -1
    try:
        for parsed, key, size in chunks:
            if parsed.segment != current:
                if fd >= 0:
                    os.fsync(fd)
                    os.close(fd)
                current = parsed.segment
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                fd = os.open(segment_path(target, current), flags, _SEGMENT_MODE)
                done.segments += 1
            data = await _read(s3, bucket, key, entries[key].version)
            if upto is not None and parsed.last > upto:
                data = _cut(data, upto, key)
            for raw in data.splitlines():
                obj = parse_line(raw)
                done.lines += 1
                done.last_seq = int(obj["seq"])
                if obj.get("kind") == "attachment" and is_hex_digest(obj.get("sha256")):
                    wanted[obj["sha256"]] = None
            _write_all(fd, data)
            done.bytes += len(data)
            bar.advance(size)
    finally:
        if fd >= 0:
            os.fsync(fd)
            os.close(fd)
    return wanted


def _cut(data: bytes, upto: int, key: str) -> bytes:
    """The chunk's lines up to and with seq `upto`."""
    end = 0
    for raw in data.splitlines(keepends=True):
        end += len(raw)
        if parse_line(raw.rstrip(b"\n")).get("seq") == upto:
            return data[:end]
    raise RestoreError(f"{key}: no line with seq {upto} (its key names it)")


async def _blob(  # noqa: PLR0917 - one blob's whole context
    s3: S3Client,
    bucket: str,
    prefix: str,
    target: Path,
    sha: str,
    entries: dict[str, _Entry],
    *,
    done: Restored,
    bar: Bar,
) -> None:
    final = blob_path(target, sha)
    if final.exists():
        return
    key = blob_key(prefix, sha)
    tmp = target / TMP_DIR / f"{sha}.restore"
    digest = hashlib.sha256()
    entry = entries.get(key)
    if entry is None or not entry.version:
        done.problems.append(f"{key}: not in the bucket (verify will name its line)")
        return
    try:
        answer = await s3.get_object(Bucket=bucket, Key=key, VersionId=entry.version)
    except ClientError as exc:
        if status_of(exc) == 404:
            done.problems.append(f"{key}: not in the bucket (verify will name its line)")
            return
        raise
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        async with answer["Body"] as body:
            while block := await body.read(READ_BYTES):
                digest.update(block)
                _write_all(fd, block)
                bar.advance(len(block))
        os.fsync(fd)
    finally:
        os.close(fd)
    if digest.hexdigest() != sha:
        tmp.unlink()
        done.problems.append(f"{key}: its bytes hash to {digest.hexdigest()}, not its name")
        return
    final.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(tmp, _BLOB_MODE)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    done.blobs += 1


async def _read(s3: S3Client, bucket: str, key: str, version: str) -> bytes:
    answer: Any = await s3.get_object(Bucket=bucket, Key=key, VersionId=version)
    async with answer["Body"] as body:
        data: bytes = await body.read()
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
