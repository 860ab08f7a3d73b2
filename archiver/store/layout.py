"""Where things live under the archive root (DESIGN.md, "Archive format").

Every path is built from a validated SHA-256 hex digest or an integer segment number, never from
a name or id that came from Zoom, so nothing upstream can steer a write outside ROOT
(invariant 2).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from contextlib import suppress
from pathlib import Path
from typing import Final

from archiver.errors import ConfigError
from archiver.store.manifest import is_hex_digest, parse_segment_name, segment_name

MANIFEST_DIR: Final = "manifest"
BLOBS_DIR: Final = "blobs/sha256"
TMP_DIR: Final = "tmp"
CHECKPOINTS_DIR: Final = "checkpoints"  # signed checkpoint notes, when a key is configured
RECOVERED_DIR: Final = "recovered"  # bytes cut from a torn final line at start-up
STATE_FILE: Final = "state.sqlite3"
LOCK_FILE: Final = "LOCK"
_PRIVATE_DIR: Final = 0o700


# ROOT's own names. None may be a symbolic link: writes through one would land outside ROOT
# (invariant 2), and emptying a linked tmp/ would empty whatever it points at.
FIXED_NAMES: Final = (
    MANIFEST_DIR,
    "blobs",
    BLOBS_DIR,
    TMP_DIR,
    CHECKPOINTS_DIR,
    RECOVERED_DIR,
    STATE_FILE,
    # The files SQLite opens beside the state by name (WAL mode, or a rollback journal): a
    # link there is refused by SQLite's own O_NOFOLLOW, but as a bare "unable to open
    # database file" with no path; refused here first, exit 2 naming it.
    f"{STATE_FILE}-wal",
    f"{STATE_FILE}-shm",
    f"{STATE_FILE}-journal",
    LOCK_FILE,
)


def refuse_symlinks(root: Path) -> None:
    """ConfigError (exit 2) naming the first of ROOT's fixed names that is a symbolic link."""
    for name in FIXED_NAMES:
        path = root / name
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a symbolic link; the archive never follows links inside its root. "
                "Replace it with the real folder or file (or point archive.root at the real "
                "location)",
                key="archive.root",
            )


def prepare_root(root: Path) -> None:
    """Create ROOT and its folders, and empty tmp/ of partial downloads from an earlier run.

    Call it while holding the ArchiveLock: emptying tmp/ under a running daemon would pull its
    in-flight downloads away. Refuses (ConfigError) when a fixed name is a symbolic link.
    """
    refuse_symlinks(root)
    _make_private_dir(root)
    for sub in (MANIFEST_DIR, BLOBS_DIR, TMP_DIR):
        _make_private_dir(root / sub)
    # A new directory's name is durable only once its parent is fsynced: without this a power
    # cut after the first fsynced lines and blobs could take manifest/ and blobs/ away whole,
    # while the state (SQLite syncs its own files) already holds the tokens that follow them.
    with suppress(OSError):  # best effort: the folder above ROOT is the operator's
        fsync_dir(root.parent)
    for directory in (root, root / "blobs"):
        fsync_dir(directory)
    _empty_dir(root / TMP_DIR)


def _empty_dir(path: Path) -> None:
    """Remove everything in `path`, never following a link: the folder is opened once with
    O_NOFOLLOW, and every entry is removed relative to that descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with os.scandir(fd) as entries:
            names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for name, is_dir in names:
            if is_dir:
                shutil.rmtree(name, dir_fd=fd)  # fd-based: links inside are removed, not followed
            else:
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


# The OS is out of something for now (descriptors, memory): the same rule as
# archiver.ops.serving.is_resource_exhaustion, which the network side uses.
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# Seconds between tries of an open the OS refused for want of resources: ~16 s in all.
OPEN_WAITS: Final = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


def open_waiting(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open, tried again (blocking: call it from a thread) while the process is out of
    descriptors or memory, as a hostile client can make it; any other error, or the last
    one, is raised. A refused open created nothing, so O_EXCL is safe to try again."""
    for delay in (*OPEN_WAITS, None):
        try:
            return os.open(path, flags, mode)
        except OSError as exc:
            if delay is None or exc.errno not in _RESOURCE_ERRNOS:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (names created, renamed in) durable."""
    fd = open_waiting(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dir(path: Path) -> None:
    if path.is_dir():
        return  # an operator may have opened permissions on purpose; leave them be
    path.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
    path.chmod(_PRIVATE_DIR)  # mkdir's mode is filtered by the umask


def blob_relpath(sha256_hex: str) -> str:
    """`blobs/sha256/ab/<hex>`: a blob's path relative to ROOT, as written in attachment lines."""
    if not is_hex_digest(sha256_hex):
        raise ValueError("a blob is named by a lowercase 64-digit SHA-256 hex digest")
    return f"{BLOBS_DIR}/{sha256_hex[:2]}/{sha256_hex}"


def blob_path(root: Path, sha256_hex: str) -> Path:
    return root / blob_relpath(sha256_hex)


def manifest_dir(root: Path) -> Path:
    return root / MANIFEST_DIR


def segment_path(root: Path, n: int) -> Path:
    return root / MANIFEST_DIR / segment_name(n)


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The canonically named segment files in `directory`, in order (gaps included)."""
    if not directory.is_dir():
        return []
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            n = parse_segment_name(entry.name)
            if n is not None and entry.is_file(follow_symlinks=False):
                found.append((n, Path(entry.path)))
    return sorted(found)


def missing_segments(numbers: list[int]) -> list[tuple[int, int]]:
    """Ranges (first, last) of segment numbers absent from 1..max: a manifest has none.

    Ranges rather than numbers, so a stray `999999999.jsonl` costs one entry, not a billion.
    """
    gaps, expected = [], 1
    for n in sorted(numbers):
        if n > expected:
            gaps.append((expected, n - 1))
        expected = n + 1
    return gaps
