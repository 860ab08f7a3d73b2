"""Child process for the crash tests: `python -m tests.store.crash_child ROOT FIRST COUNT`.

Appends messages FIRST..FIRST+COUNT-1 of session "s" in one batch, the way the daemon does
(lock, prepare, state, writer). With ARCHIVER_CRASH_AT set it dies by SIGKILL at that point.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from archiver.store.layout import prepare_root
from archiver.store.lock import ArchiveLock
from archiver.store.state import State
from archiver.store.writer import ManifestWriter
from tests.store.conftest import message


async def main(root: Path, first: int, count: int) -> None:
    with ArchiveLock(root):
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state)
        # Texts of different lengths, so that half the batch never ends on a line boundary.
        records = [message(n, text="x" * n) for n in range(first, first + count)]
        await writer.append_messages("s", records, "sync")
        await writer.close()
        state.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
