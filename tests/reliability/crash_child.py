"""Child for test_crash_points: `python -m tests.reliability.crash_child ROOT`.

Two rounds of what a session sync does (a page made durable, then its token saved), the way
the daemon opens the archive; ARCHIVER_CRASH_AT decides where it dies.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from archiver.store.layout import prepare_root
from archiver.store.lock import ArchiveLock
from archiver.store.state import State
from archiver.store.writer import ManifestWriter


async def main(root: Path) -> None:
    with ArchiveLock(root):
        prepare_root(root)
        state = State.open(root)
        writer = await ManifestWriter.open(root, state)
        for page in (1, 2):
            records = [{"message_id": f"p{page}-m{n}", "message": "x" * n} for n in range(4)]
            await writer.append_messages("s", records, "sync")
            state.save_sync_tokens("s", newest_token=f"token-{page}")
        await writer.close()
        state.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
