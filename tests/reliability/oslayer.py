"""A test layer at the OS-call boundary, for the daemon run as a child process.

    python -m tests.reliability.oslayer --journal J [--fail-fsync-under manifest/]
        [--fail-after N] [--errno EIO] [--fsize BYTES] -- run --config FILE --once

- Every `os.fsync` is journalled to J after it returns: for a file its inode and the size the
  call made durable, for a directory its entries (name -> inode) at the time of the call. That
  is all `powerloss.power_cut` needs to undo what a power cut would have lost, in the manner of
  SQLite's crash tests: data written but not fsynced, names created but not fsynced.
- `--fail-fsync-under P --fail-after N`: the (N+1)-th and every later fsync of a file whose
  path contains P fails with `--errno` (EIO by default), as a dying disk does. What the
  kernel had buffered is then gone; the journal notes the failure and every later call, so a
  test can see that the daemon never retried an fsync on that file.
- `--fsize BYTES`: RLIMIT_FSIZE, with SIGXFSZ ignored so that a write past the limit fails
  with EFBIG: a full disk without needing a mount.

Only `os.fsync` is replaced ("mock only what cannot be had"): SQLite syncs in C and is judged
by its own guarantees; everything the archiver itself makes durable goes through os.fsync.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from typing import Any

_real_fsync = os.fsync


class Journal:
    def __init__(self, path: str) -> None:
        # O_APPEND and one write per record: records from several threads never interleave,
        # and a SIGKILL loses at most the record being written (the fsync then counts as not
        # having happened, which is what the caller could not have relied on either).
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, **entry: Any) -> None:
        os.write(self._fd, json.dumps(entry, sort_keys=True).encode() + b"\n")


class FsyncLayer:
    def __init__(self, journal: Journal, fail_under: str | None, fail_after: int, code: int):
        self._journal = journal
        self._fail_under = fail_under
        self._fail_after = fail_after
        self._errno = code
        self._matching = 0
        self._lock = threading.Lock()

    def fsync(self, fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        path = os.readlink(f"/proc/self/fd/{fd}")
        info = os.fstat(fd)
        if self._fail_under is not None and self._fail_under in path:
            with self._lock:
                self._matching += 1
                fail = self._matching > self._fail_after
            if fail:
                self._journal.record(op="fsync_failed", path=path, errno=self._errno)
                raise OSError(self._errno, os.strerror(self._errno))
        # Taken before the call: the fsync covers what existed when it was made; whatever
        # appears while it runs is not promised (and is treated as lost).
        if stat.S_ISDIR(info.st_mode):
            entries = {e.name: e.inode() for e in os.scandir(path)}
            _real_fsync(fd)
            self._journal.record(op="dirsync", path=path, entries=entries)
        else:
            _real_fsync(fd)
            self._journal.record(op="fsync", path=path, ino=info.st_ino, size=info.st_size)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="oslayer")
    parser.add_argument("--journal", required=True)
    parser.add_argument("--fail-fsync-under", default=None)
    parser.add_argument("--fail-after", type=int, default=0)
    parser.add_argument("--errno", default="EIO", choices=sorted(errno.errorcode.values()))
    parser.add_argument("--fsize", type=int, default=None)
    args, rest = parser.parse_known_args(argv)
    return args, [a for a in rest if a != "--"]


def main(argv: Sequence[str]) -> int:
    args, rest = parse(argv)
    if args.fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, args.fsize))
    layer = FsyncLayer(
        Journal(args.journal), args.fail_fsync_under, args.fail_after, getattr(errno, args.errno)
    )
    os.fsync = layer.fsync  # before the archiver is imported: every caller looks it up late
    from archiver.cli import main as archiver_main

    return archiver_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
