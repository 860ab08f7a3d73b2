"""Power loss before fsync, applied to an archive after its daemon was SIGKILLed.

The child ran under `oslayer`, which journalled every fsync. `power_cut` then puts the archive
in a state the disk could be in after the power went at that instant:
- a file keeps the bytes its last fsync covered; of what was written after that, a random
  prefix survives (`keep_unsynced`), possibly with its end turned to zeros (`zero_tail`: the
  size reached the disk but the data blocks did not, as ext4 and XFS can show);
- a directory keeps only the entries it held at its last fsync: a file created, or renamed
  in, since then is gone; a directory never fsynced into its parent is gone with its content.

state.sqlite3 is SQLite's own business (it syncs in C): by default it is left exactly as the
process left it, every commit kept, the hardest case for invariant 4 (a token that reached
the state while the page before it did not reach the manifest would show). `lose_state`
deletes it instead: the cache is gone.
`mark_durable` records the state after the cut as the new baseline: after a reboot, what is
on disk is durable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

# SQLite's files and the lock are not modelled (see the module docstring).
UNMODELLED = frozenset({"state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm", "LOCK"})


@dataclass
class CutReport:
    bytes_dropped: int = 0
    bytes_zeroed: int = 0
    entries_dropped: int = 0


def mark_durable(root: Path, journal: Path) -> None:
    """Journal the archive as it is now as durable (before a run: after a 'reboot')."""
    with journal.open("a") as out:
        for directory, dirs, files in os.walk(root):
            names = dirs + files
            entries = {name: os.lstat(os.path.join(directory, name)).st_ino for name in names}
            out.write(json.dumps({"op": "dirsync", "path": directory, "entries": entries}) + "\n")
            for name in files:
                info = os.lstat(os.path.join(directory, name))
                record = {"op": "fsync", "path": "", "ino": info.st_ino, "size": info.st_size}
                out.write(json.dumps(record) + "\n")


Names = dict[str, set[int]]  # entry name -> the inodes it has durably named


def _durable(journal: Path) -> tuple[dict[int, int], dict[str, Names]]:
    """The size each inode's last fsync made durable (a file has one writer, and a truncate
    followed by an fsync must shrink it); per directory, every (name, inode) any of its
    fsyncs covered: fsyncs of one directory from several threads (blob commits) finish in
    any order, and an older listing must not undo a newer name."""
    sizes: dict[int, int] = {}
    dirs: dict[str, Names] = {}
    if journal.exists():
        for raw in journal.read_text().splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # the record being written when the process was killed
            if entry["op"] == "fsync":
                sizes[entry["ino"]] = entry["size"]
            elif entry["op"] == "dirsync":
                names = dirs.setdefault(os.path.realpath(entry["path"]), {})
                for name, ino in entry["entries"].items():
                    names.setdefault(name, set()).add(ino)
    return sizes, dirs


def power_cut(
    root: Path,
    journal: Path,
    rng: random.Random,
    *,
    keep_unsynced: bool = True,
    zero_tail: bool = True,
    lose_state: bool = False,
) -> CutReport:
    report = CutReport()
    sizes, dirs = _durable(journal)
    _cut_directory(Path(os.path.realpath(root)), dirs, report, top=True)
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if directory == str(root) and name in UNMODELLED:
                continue
            _cut_file(Path(directory) / name, sizes, rng, keep_unsynced, zero_tail, report)
    if lose_state:
        for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
            (root / name).unlink(missing_ok=True)
    return report


def _cut_directory(
    directory: Path, dirs: dict[str, Names], report: CutReport, *, top: bool = False
) -> None:
    durable = dirs.get(str(directory), {})
    for entry in list(os.scandir(directory)):
        if top and entry.name in UNMODELLED:
            continue
        if entry.inode() not in durable.get(entry.name, set()):
            report.entries_dropped += 1
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            _cut_directory(Path(entry.path), dirs, report)


def _cut_file(
    path: Path,
    sizes: dict[int, int],
    rng: random.Random,
    keep_unsynced: bool,
    zero_tail: bool,
    report: CutReport,
) -> None:
    info = path.lstat()
    synced = min(sizes.get(info.st_ino, 0), info.st_size)
    unsynced = info.st_size - synced
    if not unsynced:
        return
    kept = rng.randint(0, unsynced) if keep_unsynced else 0
    zeros = rng.randint(0, kept) if zero_tail and kept and rng.random() < 0.5 else 0
    # The archiver made blobs read-only; the power cut does not care.
    mode = info.st_mode
    path.chmod(0o600)
    with path.open("r+b") as stream:
        stream.truncate(synced + kept)
        if zeros:
            stream.seek(synced + kept - zeros)
            stream.write(b"\0" * zeros)
    path.chmod(mode & 0o7777)
    report.bytes_dropped += unsynced - kept
    report.bytes_zeroed += zeros
