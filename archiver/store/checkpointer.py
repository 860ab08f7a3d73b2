"""The daemon's checkpoint task: a signed note right after the run's `start` line, one every
`checkpoint_interval` while the head moves, and one at every clean stop (store/checkpoint.py
has the format).

Each note is written to ROOT/checkpoints/ (never over another) and logged (event
`checkpoint` with seq, head, origin, time, signature and the whole note text): the journal is
a second place it lives, outside the archive's own disk. Without a
key there are no checkpoints, and the start-up log says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver.config import Config, read_signing_key
from archiver.errors import ConfigError, ManifestCorruptError, StorageError
from archiver.ops.logs import get_logger
from archiver.store import checkpoint


def log() -> Any:
    # Looked up at each use: a logger bound at import time keeps the logging set-up of that
    # moment, and `run` imports this module before it configures logging (JSON for journald).
    return get_logger(component="checkpoints")


class _Head(Protocol):
    @property
    def position(self) -> tuple[int, str]: ...


def load_signer(config: Config) -> Ed25519PrivateKey | None:
    """The configured signing key, or None; ConfigError (exit 2) for a key that is no key."""
    secret = read_signing_key(config)
    if secret is None:
        return None
    try:
        return checkpoint.load_private_key(secret.reveal().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # No detail from the parser: it could quote the key's bytes. TypeError: the key is
        # encrypted (no password is given); UnsupportedAlgorithm: a key type or cipher the
        # library does not know.
        raise ConfigError(
            "is not an unencrypted Ed25519 private key in PKCS#8 PEM (make one with `keygen`)",
            file=config.source,
            key="archive.signing_key_file",
        ) from None


class Checkpointer:
    def __init__(self, root: Path, key: Ed25519PrivateKey, origin: str, writer: _Head) -> None:
        self.root, self.key, self.origin, self.writer = root, key, origin, writer
        self.last_seq = 0

    async def write(self) -> Path | None:
        """Sign and store the current head, unless it was checkpointed already."""
        seq, head = self.writer.position
        if seq in (0, self.last_seq):
            return None
        note = checkpoint.sign(self.key, self.origin, seq, head, checkpoint.utc_seconds())
        try:
            path = await asyncio.to_thread(checkpoint.write_note, self.root, seq, note)
        except checkpoint.CheckpointConflict as exc:
            raise ManifestCorruptError(
                f"{exc}; the manifest's line seq {seq} hashes to {head[:16]}...: lines were "
                "removed or replaced since that note was signed. Run `zoom-sms-archiver verify "
                "ROOT --trust PUB`; restore ROOT from a replica (`restore`) or a backup"
            ) from None
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot write a checkpoint: {exc.strerror}") from exc
        self.last_seq = seq
        # The whole note: the journal copy can be checked on its own (`verify --checkpoints`).
        log().info(
            "checkpoint",
            seq=seq,
            head=head,
            origin=self.origin,
            time=checkpoint.parse(note).time,
            signature=checkpoint.signature_of(note),
            note=note.decode(),
        )
        return path

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self.write()
            except StorageError as exc:
                # Archiving goes on; the next interval tries again, and a clean stop that
                # cannot write its checkpoint fails the run.
                log().error("checkpoint_failed", error=str(exc))


@contextlib.asynccontextmanager
async def checkpoints(
    config: Config, key: Ed25519PrivateKey | None, writer: _Head
) -> AsyncIterator[None]:
    """Checkpoints while the body runs, and a last one when it ends without an error."""
    if key is None:
        log().warning(
            "checkpoints_disabled",
            reason="no signing key configured (archive.signing_key_file or "
            "$CREDENTIALS_DIRECTORY/signing_key): the chain head is not signed",
        )
        yield
        return
    origin = checkpoint.origin_for(config.zoom.account_id)
    signer = Checkpointer(config.root, key, origin, writer)
    # The head now is the run's `start` line (and the start-up events before it). Signed
    # before anything else is written, it is what makes a checkpointed `stop` followed by
    # other lines proof that they are not this daemon's (recovery.py, verify.py). A failure
    # here fails the start: archiving on would make the next start refuse.
    await signer.write()
    stop = asyncio.Event()
    task = asyncio.create_task(signer.run(config.archive.checkpoint_interval, stop))
    try:
        yield
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    stop.set()
    await task  # its error (a failed write) is the run's error
    await signer.write()
